"""makemore in JAX/Flax. The Python API, as flax's examples have it:

    config = mmjax.get_config("transformer", max_steps=2000)   # configs/TYPE.py with overrides, locked
    state = mmjax.train_and_evaluate(config, "out")              # trains a new run in out/, or resumes it
    names = mmjax.sample("out", num_samples=20, seed=1)          # a list of words
"""

import importlib
import importlib.util

# Each name is imported from its module when first used, so that importing one module of the package (the
# sampler, say) does not import the others (the trainer).
API = {"get_config": "mmjax.config", "sample": "mmjax.inference", "train_and_evaluate": "mmjax.train"}
__all__ = list(API)


def __getattr__(name):
    if name in API:
        return getattr(importlib.import_module(API[name]), name)
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a module: mmjax.inference.load(...)
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
