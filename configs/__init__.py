"""One config per model type; installed as the package `mmjax.configs` (see pyproject.toml), read with
mmjax.get_config(TYPE)."""
