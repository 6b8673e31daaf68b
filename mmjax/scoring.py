"""How likely a trained model finds names: `score` (each name's NLL, per character and as perplexity, the
surprisal of each character, and its percentile among the run's test words) and `most_likely` (the N most
probable names, exactly, by best-first search over prefixes).

Both run the model's full forward pass (every position at once, as training evaluates it), in batches of
a fixed number of rows padded to one of a few widths (`widths`), so each width compiles once and a name's
numbers never depend on the names scored with it. A population's ensemble is the same code: its
population.Mixture mixes the members' probabilities at each position, as the ensemble's test loss does.
"""

import functools
import heapq
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax import inference, precision, sampling
from mmjax.errors import UserError
from mmjax.input_pipeline import IGNORE, STOP

SCORE_ROWS = 1024  # names per compiled call of `score`
EXPAND_ROWS = 256  # prefixes per compiled call of the search: fewer wastes less on prefixes pruned later
MAX_EXPANSIONS = 200_000  # the search gives up (a UserError) rather than expand more prefixes than this


def load(workdir, member=None, ensemble=False):
    """The Run to score or search (a loaded Run as it is): the one place this module calls the loader."""
    if isinstance(workdir, inference.Run):
        return workdir
    return inference.load(workdir, member, ensemble)


def widths(block_size):
    """The padded widths that compile: 8, 12, 16, then half as much again each time, and block_size. A
    name of L characters (L + 1 targets) goes to the narrowest that holds it: names' 6 letters cost 8
    positions rather than the longest word's 16, for 3 compiles for names.txt (1 for words of up to 7)."""
    out, width = [], 8
    while width < block_size:
        out.append(width)
        width += 4 if width < 16 else width // 2
    return out + [block_size]


def inputs(tokens_bw):
    """The model's input for each target: the start token, then the tokens (the last one dropped)."""
    return jnp.pad(tokens_bw, ((0, 0), (1, 0)))[:, :-1]


@functools.partial(jax.jit, static_argnames="model")
def surprisal_kernel(model, variables, tokens_bw, length_b):
    """-log p of each target (the name's tokens, then STOP at length_b; 0 after it): training's
    per-position cross-entropy (losses.cross_entropy), not yet summed."""
    col_w = jnp.arange(tokens_bw.shape[1])
    y_bw = jnp.where(col_w < length_b[:, None], tokens_bw, jnp.where(col_w == length_b[:, None], STOP, IGNORE))
    with precision.matmuls("float32"):  # scores in true float32 on a GPU too
        logits_bwv = model.apply(variables, inputs(tokens_bw)).astype(jnp.float32)
    nll_bw = optax.softmax_cross_entropy_with_integer_labels(logits_bwv, jnp.maximum(y_bw, 0))
    return jnp.where(y_bw != IGNORE, nll_bw, 0.0)


@functools.partial(jax.jit, static_argnames="model")
def next_log_probs_kernel(model, variables, tokens_bw, length_b):
    """log p of the token after each prefix (row b's first length_b tokens): (B, V)."""
    with precision.matmuls("float32"):
        logits_bwv = model.apply(variables, inputs(tokens_bw)).astype(jnp.float32)
    return jax.nn.log_softmax(logits_bwv[jnp.arange(tokens_bw.shape[0]), length_b])


class Batches:
    """Fixed-size batches of tokens for one model, split over the local devices (one CPU device per core
    in the commands, as sampling does): `put(tokens_bw, length_b)` pads the rows to `rows` and places them."""

    def __init__(self, run, rows):
        self.rows, self.block_size = rows, run.dataset.vocab.block_size
        self.widths = widths(self.block_size)
        self.variables = {"params": run.state.params, "batch_stats": run.state.batch_stats}
        mesh = sampling.local_mesh(rows, "rows")
        self.sharding = None if mesh is None else NamedSharding(mesh, P("rows"))
        if mesh is not None:
            self.variables = jax.device_put(self.variables, NamedSharding(mesh, P()))

    def width(self, length):
        """The narrowest width that holds a name of `length` characters and its stop."""
        return self.widths[np.searchsorted(self.widths, length + 1)]

    def put(self, tokens_nw, length_n):
        tokens_bw = np.zeros((self.rows, tokens_nw.shape[1]), np.int32)
        length_b = np.zeros(self.rows, np.int32)
        tokens_bw[:len(tokens_nw)], length_b[:len(length_n)] = tokens_nw, length_n
        return jax.device_put((tokens_bw, length_b), self.sharding) if self.sharding else (tokens_bw, length_b)


def encode(vocab, names):
    """Tokens (N, block_size), STOP after each name, and lengths, vectorised (each name a numpy string
    viewed as code points). One UserError names every character outside the vocabulary; another a
    name longer than the longest word (the model has no position for it)."""
    length_n = np.fromiter(map(len, names), np.int32, len(names))
    if len(names) and length_n.max() > vocab.max_word_length:
        i = int(np.argmax(length_n))
        raise UserError(f"{names[i]!r} has {length_n[i]} characters, more than the {vocab.max_word_length} of the "
                        "longest word the model was trained on: score names of at most that many")
    codes_nt = np.array(names + [""], f"<U{vocab.block_size}").view(np.uint32).reshape(-1, vocab.block_size)[:-1]
    chars_c = np.array([ord(c) for c in vocab.chars], np.uint32)
    order_c = np.argsort(chars_c)
    index_nt = np.minimum(np.searchsorted(chars_c[order_c], codes_nt), len(chars_c) - 1)
    known_nt = (codes_nt == 0) | (chars_c[order_c][index_nt] == codes_nt)
    if not known_nt.all():
        unknown = "".join(sorted({chr(c) for c in codes_nt[~known_nt].tolist()}))
        first = names[int(np.argmin(known_nt.all(axis=1)))]
        raise UserError(f"characters {unknown!r} (in {first!r}) are not in the vocabulary "
                        f"{''.join(vocab.chars)!r}: use only its characters")
    return np.where(codes_nt == 0, STOP, order_c[index_nt] + 1).astype(np.int32), length_n


def surprisals(run, names, batch_size=SCORE_ROWS):
    """Each name's surprisal per target, (N, block_size) float32, 0 after its stop; and its length. Each
    distinct name is scored once; names are grouped by width, and every batch is dispatched before the
    first is read (the devices compute while the host waits)."""
    distinct = list(dict.fromkeys(names))
    tokens_nt, length_n = encode(run.dataset.vocab, distinct)
    batches = Batches(run, batch_size)
    width_n = np.asarray(batches.widths)[np.searchsorted(batches.widths, length_n + 1)]
    pending = []
    for width in batches.widths:
        rows = np.flatnonzero(width_n == width)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            pending.append((chunk, surprisal_kernel(run.model, batches.variables,
                                                    *batches.put(tokens_nt[chunk, :width], length_n[chunk]))))
    surprisal_nt = np.zeros(tokens_nt.shape, np.float32)
    for (chunk, _), surprisal_bw in zip(pending, jax.device_get([s for _, s in pending])):
        surprisal_nt[chunk, :surprisal_bw.shape[1]] = surprisal_bw[:len(chunk)]
    position = {name: i for i, name in enumerate(distinct)}
    index_n = np.fromiter((position[name] for name in names), np.int64, len(names))
    return surprisal_nt[index_n], length_n[index_n]


def percentiles(value_n, reference_m):
    """How typical each value is: the % of the reference values (NLL per character) above it, ties
    counted half. 100: more likely per character than every reference word; 50: the median word."""
    sorted_m = np.sort(reference_m)
    below, above = np.searchsorted(sorted_m, value_n, "left"), np.searchsorted(sorted_m, value_n, "right")
    return 100 * ((len(sorted_m) - above) + (above - below) / 2) / len(sorted_m)


def score(workdir, names, batch_size=SCORE_ROWS, member=None, ensemble=False):
    """Each name's scores under the best checkpoint of `workdir` (a path, a WorkDir or a loaded Run; a
    population's `member`, or its `ensemble`), as a list of dicts: `name`; `nll`, its negative
    log-likelihood in nats, the stop included (so the test words' summed nll over their summed
    len + 1 is the run's test loss); `nll_per_char` = nll / (len + 1); `perplexity` = exp(nll_per_char);
    `surprisal`, -log p of each character and, last, of the stop (they sum to nll); `percentile`, the %
    of the run's test words whose nll_per_char is higher (ties half; None without test words). One name
    alone (a str) is a list of one."""
    run = load(workdir, member, ensemble)
    names, test_words = [names] if isinstance(names, str) else list(names), run.dataset.test_words
    surprisal_nt, length_n = surprisals(run, names + test_words, batch_size)  # one pass: shared batches
    nll_n = surprisal_nt.sum(axis=1, dtype=np.float64)
    per_char_n = nll_n / (length_n + 1)
    count = len(names)
    percentile_n = percentiles(per_char_n[:count], per_char_n[count:]).tolist() if test_words else [None] * count
    rows = surprisal_nt[:count].astype(np.float64).tolist()
    return [{"name": name, "nll": nll, "nll_per_char": per_char, "perplexity": math.exp(per_char),
             "surprisal": row[:length + 1], "percentile": percentile}
            for name, nll, per_char, row, length, percentile
            in zip(names, nll_n.tolist(), per_char_n.tolist(), rows, length_n.tolist(), percentile_n)]


def most_likely(workdir, n, prefix="", suffix="", contains="", regex=None, min_length=None, max_length=None,
                new=False, member=None, ensemble=False, max_expansions=MAX_EXPANSIONS):
    """The `n` most probable names under the model (temperature 1, every token), most probable first, as
    (name, probability) pairs, exactly; probabilities are the model's (the stop included), as `score`
    gives them. Only names that satisfy the constraint (sampling.Constraint: `prefix` ... `max_length`)
    and, with `new`, are not training, validation or test words; never the empty name. Fewer than `n`
    when fewer names satisfy it; a UserError if the search expands more than `max_expansions` prefixes."""
    run = load(workdir, member, ensemble)
    constraint = sampling.Constraint(prefix, suffix, contains, regex, min_length, max_length)
    return search(run, n, constraint, new, max_expansions)[0]


def read_names(path):
    """One name a line (stripped; blank lines dropped), from a file or, for '-', standard input."""
    try:
        text = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --file {path} ({getattr(e, 'strerror', None) or e}): pass a UTF-8 text "
                        "file, one name a line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def search(run, n, constraint=sampling.Constraint(), new=False, max_expansions=MAX_EXPANSIONS, rows=EXPAND_ROWS):
    """most_likely's (name, probability) pairs and the number of prefixes expanded. Best-first: a heap of
    open prefixes by log-probability; each round pops the best `rows` (fewer if fewer beat the bar) and
    one compiled call gives each its next-token log-probabilities: prefix + STOP is a complete name, kept
    among the n best if accepted; prefix + c is a new open prefix. The bar is the n-th best name's
    log-probability: since log-probabilities only fall as characters are added, a prefix at or below it
    can never lead to a better name and is dropped; the search ends when no open prefix beats it."""
    vocab, data = run.dataset.vocab, run.dataset
    exclude = frozenset(data.train_words + data.val_words + data.test_words) if new else frozenset()
    constraint.check(vocab)
    if n < 1:
        raise UserError(f"the number of most likely names must be 1 or more, got {n}: pass a positive number")
    longest = min(vocab.max_word_length, constraint.max_length or vocab.max_word_length)
    batches = Batches(run, rows)

    def next_log_probs(words):
        tokens_bw, length_b = encode(vocab, words)
        width = batches.width(int(length_b.max()))
        return np.asarray(next_log_probs_kernel(run.model, batches.variables,
                                                *batches.put(tokens_bw[:, :width], length_b)), np.float64)

    prefix = constraint.prefix  # its log-probability: that of each of its characters after the ones before
    root_logp = sum(logp_v[vocab.chars.index(c) + 1]
                    for c, logp_v in zip(prefix, next_log_probs([prefix[:i] for i in range(len(prefix))]))
                    ) if prefix else 0.0
    open_heap, best, expanded = [(-root_logp, prefix)], [], 0  # best: a min-heap of (logp, name), n at most

    def bar():
        return best[0][0] if len(best) == n else -math.inf

    while open_heap and -open_heap[0][0] > bar():
        batch = []
        while open_heap and len(batch) < rows and -open_heap[0][0] > bar():
            negative_logp, word = heapq.heappop(open_heap)
            batch.append((word, -negative_logp))
        expanded += len(batch)
        if expanded > max_expansions:
            found = f" {constraint.describe()}" if constraint.filters else ""
            raise UserError(f"the search for the {n} most likely names{found} expanded more than {max_expansions:,} "
                            f"prefixes without finishing ({len(best)} found so far): ask for fewer names, or "
                            "constrain the prefix")
        for (word, logp), logp_v in zip(batch, next_log_probs([word for word, _ in batch])):
            name_logp = logp + logp_v[STOP]
            if word and name_logp > bar() and word not in exclude and constraint.accepts(word):
                (heapq.heapreplace if len(best) == n else heapq.heappush)(best, (name_logp, word))
            if len(word) < longest:
                child_logp_v = logp + logp_v[1:]
                for c in np.flatnonzero(child_logp_v > bar()).tolist():
                    heapq.heappush(open_heap, (-child_logp_v[c], word + vocab.chars[c]))
    return [(word, math.exp(logp)) for logp, word in sorted(best, reverse=True)], expanded


def aligned(rows, right=()):
    """Rows of cells as lines of columns two spaces apart (those in `right` aligned right)."""
    widths_ = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if j in right else cell.ljust(w)
                               for j, (cell, w) in enumerate(zip(row, widths_))).rstrip() for row in rows)


def score_table(scores):
    """`score`'s results as the score command prints them: a row per name, its surprisals last, each
    after its character ('.': the end)."""
    rows = [("name", "nll", "nll/char", "perplexity", "percentile", "surprisal of each character, then of the end")]
    for s in scores:
        percentile = "-" if s["percentile"] is None else f"{s['percentile']:.1f}"
        rows.append((s["name"], f"{s['nll']:.3f}", f"{s['nll_per_char']:.3f}", f"{s['perplexity']:.2f}", percentile,
                     "  ".join(f"{c} {x:.2f}" for c, x in zip(s["name"] + ".", s["surprisal"]))))
    return aligned(rows, right=(1, 2, 3, 4))


def most_likely_table(found, dataset):
    """`most_likely`'s names as sample.py --most-likely prints them: rank, name, probability, and which of
    the run's words it is among (train, which includes the validation words; test; or new)."""
    train_words, test_words = set(dataset.train_words + dataset.val_words), set(dataset.test_words)
    rows = [("rank", "name", "probability", "in")] + [
        (str(i), word, f"{p:.4%}", "train" if word in train_words else "test" if word in test_words else "new")
        for i, (word, p) in enumerate(found, 1)]
    return aligned(rows, right=(0, 2))
