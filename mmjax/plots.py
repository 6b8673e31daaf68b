"""The lectures' pictures of a run, as PNGs in its work dir:

    python -m mmjax.plots -o out

- loss.png: train and test loss over the steps (metrics.jsonl).
- bigram_counts.png: lecture 1's matrix of bigram counts of the training words, characters labelled.
- embeddings.png: lecture 2's character embeddings (the best checkpoint's `wte`) in 2-D, by PCA
  when they have more dimensions.
- histograms.png: lecture 3's distributions of each layer's output and of the gradient there (see
  mmjax.diagnostics) on the first batch of training words, at initialisation and at the best checkpoint.
- update_ratio.png: lecture 3's log10 update:data ratio of each weight matrix at each evaluation.

`surprisal(mmjax.score(...), path)` draws names' per-character surprisals (mmjax-score --plot).
"""

import io

import jax
import numpy as np

from mmjax import diagnostics, inference, state
from mmjax.errors import Parser, UserError, run
from mmjax.models.bigram_counts import BigramCounts
from mmjax.workdir import WorkDir

DPI = 80


def loss_curves(plt, metrics):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = [m for m in metrics if "loss" in m]
    ax.plot([m["step"] for m in steps], [m["loss"] for m in steps], lw=0.5, alpha=0.4, label="batch loss")
    for name in ("train_loss", "test_loss"):
        evals = [m for m in metrics if name in m]
        ax.plot([m["step"] for m in evals], [m[name] for m in evals], marker=".", label=name.replace("_", " "))
    ax.set(xlabel="step", ylabel="loss (nats per character)", title="loss")
    ax.legend()
    return fig


def bigram_counts(plt, vocab, x_nt, y_nt):
    """Lecture 1's figure: each cell is a bigram (first character down, second across) and its count."""
    counts_vv = np.asarray(BigramCounts(vocab.size, vocab.block_size).fit(x_nt, y_nt)["counts"]).astype(int)
    chars = [".", *vocab.chars]  # '.' is token 0, start and end, as in the lecture
    fig, ax = plt.subplots(figsize=(0.36 * vocab.size + 1, 0.36 * vocab.size + 1))
    ax.imshow(counts_vv, cmap="Blues", interpolation="nearest")
    if vocab.size <= 40:  # beyond that the labels overlap
        for i, a in enumerate(chars):
            for j, b in enumerate(chars):
                ax.text(j, i, a + b, ha="center", va="bottom", color="gray", fontsize=6)
                ax.text(j, i, counts_vv[i, j], ha="center", va="top", color="gray", fontsize=5)
    ax.set_axis_off()
    ax.set_title("bigram counts of the training words")
    return fig


def embeddings(plt, vocab, embedding_vc):
    """Lecture 2's figure: each character at its embedding; the first two principal components if more."""
    e_vc = embedding_vc - embedding_vc.mean(0)
    if e_vc.shape[1] > 2:
        e_vc = e_vc @ np.linalg.svd(e_vc, full_matrices=False)[2][:2].T
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(e_vc[:, 0], e_vc[:, 1], s=200)
    for (x, y), c in zip(e_vc, [".", *vocab.chars]):
        ax.text(x, y, c, ha="center", va="center", color="white")
    ax.grid(alpha=0.3)
    principal = embedding_vc.shape[1] > 2
    ax.set(xlabel="first principal component" if principal else "dimension 0",
           ylabel="second principal component" if principal else "dimension 1",
           title=f"character embeddings ({embedding_vc.shape[1]} dimensions)")
    return fig


def histograms(plt, states, x_bt, y_bt):
    """Lecture 3's figure: per layer (row), the distribution of its output and of the loss's gradient
    there, at the word positions; one line per (label, state)."""
    found = [(label, diagnostics.layers_and_grads(state, x_bt, y_bt)) for label, state in states]
    names = diagnostics.layer_names(states[0][1], x_bt, y_bt)
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 2.2 * len(names) + 0.5), squeeze=False)
    for label, (outputs, d_outputs, weights, _) in found:
        for row, name in enumerate(names):
            at_words = np.asarray(weights[name]) > 0
            for ax, values, what in ((axes[row, 0], outputs, "output"), (axes[row, 1], d_outputs, "gradient")):
                x = np.asarray(values[name])[at_words]
                density, edges = np.histogram(x, bins=60, density=True)
                saturated = f", {np.mean(np.abs(x) > diagnostics.SATURATED):.1%} saturated" if what == "output" else ""
                ax.plot((edges[:-1] + edges[1:]) / 2, density,
                        label=f"{label}: mean {x.mean():+.2g}, std {x.std():.2g}{saturated}")
                ax.set_title(f"{name} {what}", fontsize=9)
                ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def update_ratios(plt, metrics):
    evals = [m for m in metrics if "params" in m]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for path in evals[0]["params"]:
        ax.plot([m["step"] for m in evals], [np.log10(m["params"][path]["update_data"]) for m in evals], label=path)
    ax.axhline(-3, color="black", ls="--", lw=1)  # the lecture's rule of thumb
    ax.set(xlabel="step", ylabel="log10 update:data (std)", title="update:data ratio of each weight matrix")
    ax.legend(fontsize=7)
    return fig


def save_png(fig, path):
    """A 256-colour PNG: a third of the size of matplotlib's RGBA one, and the same to the eye here."""
    from PIL import Image  # matplotlib requires pillow

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, bbox_inches="tight")
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)


def surprisal(scores, path="surprisal.png"):
    """A heatmap of mmjax.score's results (its list of dicts): a row per name, a cell per character and,
    last, the end ('.'), coloured by the character's surprisal in nats: where the model was surprised.
    Writes the PNG at `path` and returns it."""
    plt = pyplot()
    width = max(len(s["surprisal"]) for s in scores)
    grid_nt = np.full((len(scores), width), np.nan)
    for row, s in enumerate(scores):
        grid_nt[row, :len(s["surprisal"])] = s["surprisal"]
    fig, ax = plt.subplots(figsize=(0.42 * width + 2.5, 0.32 * len(scores) + 1.2))
    image = ax.imshow(np.ma.masked_invalid(grid_nt), cmap="magma_r", vmin=0, aspect="auto", interpolation="nearest")
    light = np.nanmax(grid_nt) / 2
    for row, s in enumerate(scores):
        for column, char in enumerate(s["name"] + "."):
            ax.text(column, row, char, ha="center", va="center", fontsize=8,
                    color="white" if grid_nt[row, column] > light else "black")
    ax.set_yticks(range(len(scores)), [f"{s['name']} ({s['nll_per_char']:.2f})" for s in scores], fontsize=8)
    ax.set_xticks(range(width), [str(t) for t in range(width)], fontsize=7)
    ax.set(xlabel="position ('.': the end)", title="surprisal of each character (name: nll per char)")
    fig.colorbar(image, ax=ax, label="surprisal (nats)")
    save_png(fig, path)
    plt.close(fig)
    return path


def pyplot():
    """matplotlib.pyplot, drawing to files; a UserError without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise UserError('the pictures need matplotlib: pip install -e ".[plot]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def main(args):
    plt = pyplot()
    workdir = WorkDir(args.work_dir, read_only=True)
    config, dataset, model, best = inference.load(workdir, args.member)
    metrics = member_metrics(workdir.metrics(), getattr(best, "member", None))
    initial = state.create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed))
    trained = initial.replace(params=best.params, batch_stats=best.batch_stats)  # a population's best is no TrainState
    x_nt, y_nt = dataset.vocab.encode_words(dataset.train_words)
    figures = {"loss": loss_curves(plt, metrics),
               "bigram_counts": bigram_counts(plt, dataset.vocab, x_nt, y_nt)}
    if "wte" in best.params:
        figures["embeddings"] = embeddings(plt, dataset.vocab, np.asarray(best.params["wte"]["embedding"]))
    if not hasattr(model, "fit"):
        batch = x_nt[:config.batch_size], y_nt[:config.batch_size]
        figures["histograms"] = histograms(plt, [("initialisation", initial), (f"step {int(best.step)}", trained)],
                                           *batch)
    if any("params" in m for m in metrics):
        figures["update_ratio"] = update_ratios(plt, metrics)
    for name, fig in figures.items():
        path = workdir.path / f"{name}.png"
        save_png(fig, path)
        plt.close(fig)
        print(path)


def member_metrics(metrics, member):
    """The metrics of one model, or of a population's member (None: the lines of no member)."""
    if member is None:
        return [m for m in metrics if "member" not in m]
    old = [{"step": m["step"], "loss": m["losses"][member]} for m in metrics if "losses" in m]  # earlier versions'
    return old + [m for m in metrics if m.get("member") == member]


def parser():
    parser = Parser(description="The lectures' pictures of a run, as PNGs in its work dir.")
    parser.add_argument("--work-dir", "-o", default="out", help="a work dir written by train.py")
    parser.add_argument("--member", type=int, help="a population's member I (default: its best)")
    return parser


if __name__ == "__main__":
    run(main, parser())
