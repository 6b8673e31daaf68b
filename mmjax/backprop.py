"""Lecture 4 ("becoming a backprop ninja"): the backward pass of the MLP with BatchNorm by hand,
tensor by tensor, checked against jax.grad.

`forward` is the mlp_bn model (mmjax/models/mlp_bn.py) written out one tensor per line with the
lecture's names. Its rows are every position of a padded batch of names (N = B*T windows of the
last `context` tokens); the BatchNorm statistics and the loss are taken over the n real positions
(`mask_n`: the start and the characters, the positions with a target), as the model takes them.
The lecture divides the batch variance by n - 1 (Bessel), flax's BatchNorm and so the model by n:
`correction` picks (0 is the model's forward, 1 the lecture's). With correction 0 the loss and the
gradients are the model's own, which is what `train.py --manual-grad` trains with.

    python -m mmjax.backprop [-i words.txt] [--bessel]    # the lecture's comparison table
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mmjax import input_pipeline, precision
from mmjax.errors import Parser, UserError, run

EPS = 1e-5  # BatchNorm's epsilon, the model's and the lecture's
MOMENTUM = 0.9  # of the running statistics (torch's 0.1)
# the lecture's parameter names and where they sit in the model's params
PARAMS = {"C": ("wte", "embedding"), "W1": ("hidden_0", "linear", "kernel"), "bngain": ("hidden_0", "bn", "scale"),
          "bnbias": ("hidden_0", "bn", "bias"), "W2": ("lm_head", "kernel"), "b2": ("lm_head", "bias")}

# the lecture's comparison table, in the order backward computes the gradients
TABLE = ("logprobs probs counts_sum_inv counts_sum counts norm_logits logit_maxes logits h W2 b2 hpreact bngain "
         "bnbias bnraw bnvar_inv bnvar bndiff2 bndiff bnmeani hprebn embcat W1 emb C").split()


def lecture_params(params):
    """The model's params under the lecture's names."""
    flat = traverse_util.flatten_dict(params)
    return {name: flat[path] for name, path in PARAMS.items()}


def model_params(named):
    """The inverse of lecture_params."""
    return traverse_util.unflatten_dict({path: named[name] for name, path in PARAMS.items()})


def rows(x_bt, y_bt, context):
    """The batch as the lecture's rows: each position's window of `context` tokens (left-padded with
    token 0, as the model pads), its target (0 where there is none) and 1.0 where it is real (has a
    target: for encoded words, the positions the model's BatchNorm counts too)."""
    T = x_bt.shape[1]
    x_pad = jnp.pad(x_bt, ((0, 0), (context - 1, 0)))
    x_n3 = jnp.stack([x_pad[:, i:i + T] for i in range(context)], axis=-1).reshape(-1, context)
    mask_n = (y_bt != input_pipeline.IGNORE).reshape(-1)
    return x_n3, jnp.where(mask_n, y_bt.reshape(-1), 0), mask_n.astype(jnp.float32)


def forward(p, x_n3, y_n, mask_n, correction=0, taps=None):
    """The loss and every intermediate tensor, under the lecture's names. `taps` (zeros) are added to
    the intermediates, so that jax.grad with respect to them is the intermediates' gradient."""
    t = {}

    def keep(name, value):
        t[name] = value + taps[name] if taps else value
        return t[name]

    n, m = mask_n.sum(), mask_n[:, None]
    emb = keep("emb", p["C"][x_n3])  # (N, context, n_embd)
    embcat = keep("embcat", emb.reshape(len(emb), -1))
    hprebn = keep("hprebn", embcat @ p["W1"])  # no b1: BatchNorm's bias replaces it
    bnmeani = keep("bnmeani", (m * hprebn).sum(0, keepdims=True) / n)
    bndiff = keep("bndiff", hprebn - bnmeani)
    bndiff2 = keep("bndiff2", bndiff ** 2)
    bnvar = keep("bnvar", (m * bndiff2).sum(0, keepdims=True) / (n - correction))
    bnvar_inv = keep("bnvar_inv", (bnvar + EPS) ** -0.5)
    bnraw = keep("bnraw", bndiff * bnvar_inv)
    hpreact = keep("hpreact", p["bngain"] * bnraw + p["bnbias"])
    h = keep("h", jnp.tanh(hpreact))
    logits = keep("logits", h @ p["W2"] + p["b2"])
    logit_maxes = keep("logit_maxes", logits.max(1, keepdims=True))
    norm_logits = keep("norm_logits", logits - logit_maxes)  # for numerical stability only
    counts = keep("counts", jnp.exp(norm_logits))
    counts_sum = keep("counts_sum", counts.sum(1, keepdims=True))
    counts_sum_inv = keep("counts_sum_inv", counts_sum ** -1)
    probs = keep("probs", counts * counts_sum_inv)
    logprobs = keep("logprobs", jnp.log(probs))
    loss = -(mask_n * logprobs[jnp.arange(len(y_n)), y_n]).sum() / n
    return loss, t


def cross_entropy_backward(logits, y_n, mask_n):
    """Exercise 2: d loss / d logits at once, (softmax - one-hot) / n at the real positions."""
    return (jax.nn.softmax(logits) - jax.nn.one_hot(y_n, logits.shape[1])) * mask_n[:, None] / mask_n.sum()


def batchnorm_backward(dhpreact, bnraw, bnvar_inv, bngain, mask_n, correction=0):
    """Exercise 3: d loss / d hprebn at once. Padding rows neither enter the statistics nor the loss:
    their gradient is 0, and so are their dhpreact in the sums."""
    n, m = mask_n.sum(), mask_n[:, None]
    return m * bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(0) - n / (n - correction) * bnraw
                                         * (dhpreact * bnraw).sum(0))


def backward(p, t, x_n3, y_n, mask_n, correction=0, fused=False):
    """The gradient of the loss with respect to every tensor of `forward` and every parameter:
    exercise 1 one operation at a time, or (fused) with exercises 2 and 3's one-line steps."""
    n, m, N = mask_n.sum(), mask_n[:, None], len(y_n)
    d = {}
    if fused:
        d["logits"] = cross_entropy_backward(t["logits"], y_n, mask_n)
    else:
        d["logprobs"] = jnp.zeros_like(t["logprobs"]).at[jnp.arange(N), y_n].set(-mask_n / n)
        d["probs"] = d["logprobs"] / t["probs"]
        d["counts_sum_inv"] = (d["probs"] * t["counts"]).sum(1, keepdims=True)
        d["counts_sum"] = -t["counts_sum"] ** -2 * d["counts_sum_inv"]
        # counts reach the loss twice: through probs and through counts_sum
        d["counts"] = d["probs"] * t["counts_sum_inv"] + d["counts_sum"]
        d["norm_logits"] = d["counts"] * t["counts"]
        d["logit_maxes"] = -d["norm_logits"].sum(1, keepdims=True)
        d["logits"] = d["norm_logits"] + jax.nn.one_hot(t["logits"].argmax(1), t["logits"].shape[1]) * d["logit_maxes"]
    d["h"] = d["logits"] @ p["W2"].T
    d["W2"] = t["h"].T @ d["logits"]
    d["b2"] = d["logits"].sum(0)
    d["hpreact"] = (1 - t["h"] ** 2) * d["h"]
    d["bngain"] = (t["bnraw"] * d["hpreact"]).sum(0)
    d["bnbias"] = d["hpreact"].sum(0)
    if fused:
        d["hprebn"] = batchnorm_backward(d["hpreact"], t["bnraw"], t["bnvar_inv"], p["bngain"], mask_n, correction)
    else:
        d["bnraw"] = p["bngain"] * d["hpreact"]
        d["bnvar_inv"] = (t["bndiff"] * d["bnraw"]).sum(0, keepdims=True)
        d["bnvar"] = -0.5 * (t["bnvar"] + EPS) ** -1.5 * d["bnvar_inv"]
        d["bndiff2"] = m / (n - correction) * d["bnvar"]
        # bndiff reaches the loss through bnraw and through the variance
        d["bndiff"] = t["bnvar_inv"] * d["bnraw"] + 2 * t["bndiff"] * d["bndiff2"]
        d["bnmeani"] = -d["bndiff"].sum(0, keepdims=True)
        d["hprebn"] = d["bndiff"] + m / n * d["bnmeani"]
    d["embcat"] = d["hprebn"] @ p["W1"].T
    d["W1"] = t["embcat"].T @ d["hprebn"]
    d["emb"] = d["embcat"].reshape(t["emb"].shape)
    d["C"] = jnp.zeros_like(p["C"]).at[x_n3].add(d["emb"])
    return d


def autodiff(p, x_n3, y_n, mask_n, correction=0):
    """What `backward` computes, by jax.grad of `forward`."""
    taps = jax.tree.map(jnp.zeros_like, forward(p, x_n3, y_n, mask_n, correction)[1])
    loss = lambda p, taps: forward(p, x_n3, y_n, mask_n, correction, taps)[0]
    d_params, d_taps = jax.grad(loss, argnums=(0, 1))(p, taps)
    return {**d_taps, **d_params}


def value_and_grad(params, state, x_bt, y_bt, train=True, dropout_key=None, compute_dtype="float32"):
    """losses.value_and_grad for the mlp_bn model (no dropout, float32) with the fused manual backward:
    ((loss, updated batch_stats), grads) of the model's own forward (correction 0). The trainer takes it
    as its `value_and_grad`."""
    p = lecture_params(params)
    x_n3, y_n, mask_n = rows(x_bt, y_bt, p["W1"].shape[0] // p["C"].shape[1])
    with precision.matmuls(compute_dtype):  # float32 (config.validate): true float32 on a GPU too
        loss, t = forward(p, x_n3, y_n, mask_n)
        d = backward(p, t, x_n3, y_n, mask_n, fused=True)
    running = state.batch_stats["hidden_0"]["bn"]
    stats = {"mean": t["bnmeani"][0], "var": t["bnvar"][0]}
    batch_stats = {"hidden_0": {"bn": {k: MOMENTUM * running[k] + (1 - MOMENTUM) * stats[k] for k in stats}}}
    return (loss, batch_stats), model_params({name: d[name] for name in PARAMS})


def compare(manual, auto):
    """The lecture's cmp: exactly equal, allclose (torch's default tolerances), max abs difference."""
    manual, auto = np.asarray(manual), np.asarray(auto)
    return bool((manual == auto).all()), bool(np.allclose(manual, auto, rtol=1e-5, atol=1e-8)), \
        float(np.abs(manual - auto).max())


@functools.partial(jax.jit, static_argnames="correction")
def gradients(p, x_n3, y_n, mask_n, correction=0):
    """Every tensor's gradient three ways: exercise 1 (one operation at a time), fused, jax.grad; in true float32."""
    with precision.matmuls("float32"):
        t = forward(p, x_n3, y_n, mask_n, correction)[1]
        return (backward(p, t, x_n3, y_n, mask_n, correction),
                backward(p, t, x_n3, y_n, mask_n, correction, fused=True), autodiff(p, x_n3, y_n, mask_n, correction))


def table(p, x_n3, y_n, mask_n, correction=0):
    """Rows (name, exact, approximate, maxdiff): every tensor of exercise 1, then the fused logits and
    hprebn of exercises 2 and 3, against jax.grad."""
    atomic, fused, auto = gradients(p, x_n3, y_n, mask_n, correction)
    return [(name, *compare(atomic[name], auto[name])) for name in TABLE] + \
        [(f"{name} (fused)", *compare(fused[name], auto[name])) for name in ("logits", "hprebn")]


def random_params(model, x_bt, seed):
    """The model's initial params plus N(0, 0.1) noise, as the lecture initialises them off their usual
    values: a wrong formula cannot hide behind a zero bias or a unit gain."""
    init_key, noise_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(init_key, x_bt)["params"]
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(noise_key, len(leaves))
    return jax.tree.unflatten(treedef, [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])


def main(args):
    from mmjax.models.mlp_bn import MLPBatchNorm

    words = input_pipeline.read_words(args.input_file or input_pipeline.default_words_path())
    vocab = input_pipeline.Vocab.from_words(words)
    if not 0 < args.batch_size <= len(words):
        raise UserError(f"batch size {args.batch_size} is not between 1 and the {len(words)} words: pass another -b")
    model = MLPBatchNorm(vocab.size, vocab.block_size)  # the lecture's sizes
    batch = np.random.default_rng(args.seed).choice(len(words), args.batch_size, replace=False)
    x_bt, y_bt = map(jnp.asarray, vocab.encode_words([words[i] for i in batch]))
    p = lecture_params(random_params(model, x_bt, args.seed))
    x_n3, y_n, mask_n = rows(x_bt, y_bt, model.context)
    correction = 1 if args.bessel else 0
    print(f"{args.batch_size} names, {int(mask_n.sum())} positions, variance / (n - {correction}):")
    for name, exact, approximate, maxdiff in table(p, x_n3, y_n, mask_n, correction):
        print(f"{name:15s} | exact: {str(exact):5s} | approximate: {str(approximate):5s} | maxdiff: {maxdiff:.1e}")


def parser():
    parser = Parser(description="Lecture 4's manual backward pass of mlp_bn against jax.grad.")
    parser.add_argument("--input-file", "-i", help="words to draw the batch from (default: the embedded names)")
    parser.add_argument("--batch-size", "-b", type=int, default=32, help="names in the batch")
    parser.add_argument("--seed", type=int, default=42, help="of the batch and the parameters")
    parser.add_argument("--bessel", action="store_true", help="the lecture's variance, / (n - 1), not the model's / n")
    return parser


if __name__ == "__main__":
    run(main, parser())
