"""The WaveNet of makemore lecture 5: an 8-token window fused in three levels of pairs, 24-dim
embeddings, 128 hidden units (76,579 parameters)."""

from mmjax.config import base_config, lecture_sgd


def get_config():
    config = base_config()
    config.type = "wavenet"
    config.context = 8
    config.n_embd = 24
    config.diagnostics = True  # lecture 3's statistics of activations, gradients and updates
    config.n_embd2 = 128
    # The lecture's optimisation for the lecture's number of training examples: a step here trains on
    # every position of 32 names, about 7 each on names.txt, so its 200K steps of 32 windows are about
    # 30K steps here. The lecture's 200K steps overfit this model: test loss 2.055 at the end, 1.979 here.
    return lecture_sgd(config, max_steps=30_000)
