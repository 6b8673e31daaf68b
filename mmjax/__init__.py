"""makemore in JAX/Flax. The Python API, as flax's examples have it:

    config = mmjax.get_config("transformer", max_steps=2000)   # configs/TYPE.py with overrides, locked
    state = mmjax.train_and_evaluate(config, "out")              # trains a new run in out/, or resumes it
    names = mmjax.sample("out", num_samples=20, seed=1)          # a list of words
"""

from mmjax.config import get_config
from mmjax.inference import sample
from mmjax.train import train_and_evaluate

__all__ = ["get_config", "sample", "train_and_evaluate"]
