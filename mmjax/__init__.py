"""makemore in JAX/Flax. The Python API, as flax's examples have it:

    config = mmjax.get_config("transformer", max_steps=2000)   # configs/TYPE.py with overrides, locked
    state = mmjax.train_and_evaluate(config, "out")              # trains a new run in out/, or resumes it
    names = mmjax.sample("out", num_samples=20, seed=1)          # a list of words
    scores = mmjax.score("out", ["emma", "zyx"])                 # a dict per name: nll, surprisal, percentile...
    top = mmjax.most_likely("out", 20, prefix="ma")              # [(name, probability)], most probable first
"""

from mmjax.config import get_config
from mmjax.inference import sample
from mmjax.scoring import most_likely, score
from mmjax.train import train_and_evaluate

__all__ = ["get_config", "most_likely", "sample", "score", "train_and_evaluate"]
