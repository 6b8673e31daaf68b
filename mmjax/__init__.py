"""makemore in JAX/Flax. The Python API, as flax's examples have it:

    config = mmjax.get_config("transformer", max_steps=2000)   # configs/TYPE.py with overrides, locked
    state = mmjax.train_and_evaluate(config, "out")              # trains a new run in out/, or resumes it
    names = mmjax.sample("out", num_samples=20, seed=1)          # a list of words
    scores = mmjax.score("out", ["emma", "zyx"])                 # a dict per name: nll, surprisal, percentile...
    top = mmjax.most_likely("out", 20, prefix="ma")              # [(name, probability)], most probable first
"""

import importlib
import importlib.util

# Each name is imported from its module when first used, so that importing one module of the package (the
# sampler, say) does not import the others (the trainer).
API = {"get_config": "mmjax.config", "most_likely": "mmjax.scoring", "sample": "mmjax.inference",
       "score": "mmjax.scoring", "train_and_evaluate": "mmjax.train"}
__all__ = list(API)


def __getattr__(name):
    if name in API:
        return getattr(importlib.import_module(API[name]), name)
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a module: mmjax.inference.load(...)
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
