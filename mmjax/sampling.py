"""Compiled, batched sampling through every model's decode interface (mmjax/models/__init__.py).

The batch stays full: when a row's name ends, the next sample starts in that row at the following
step (each row has its own position), so every computed token belongs to some name. Several local
devices split the rows, each decoding its own samples."""

import dataclasses
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax import precision
from mmjax.errors import UserError
from mmjax.input_pipeline import STOP
from mmjax.models.layers import fmix32

NAMES_PER_ROW = 64  # samples per compiled call = rows * this: long enough that a call's draining tail is short
# the fewest rows (and samples per call) a call compiles for, on one device: -n 1 to 64 share one program with the
# samples printed while training, so none compiles again (about 0.9 s), for idle rows (a default Transformer's
# -n 10: 9.1 ms a call instead of 2.5 on the CPU)
MIN_ROWS = 64
DRAWS_PER_NAME = 100  # --unique/--new give up after this many draws per name asked
CONSTRAINED_DRAWS_PER_NAME = 1000  # ... and with a Constraint's filter: acceptance rates down to 0.1% work


@functools.partial(jax.tree_util.register_dataclass, data_fields=["temperature", "top_k", "top_p"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """How each token is chosen. A pytree of scalars: the compiled sampler takes them as traced values, so one
    program serves every temperature, top-k and top-p (`sample` gives them fixed dtypes)."""

    temperature: float = 1.0  # 0 is greedy
    top_k: int = -1  # keep the k most likely tokens (-1: all)
    top_p: float = 1.0  # keep the smallest set of most likely tokens whose probability reaches p

    def typed(self):
        """The options as float32, int32 and float32 scalars: the same avals whatever the caller passed."""
        return SampleOptions(np.float32(self.temperature), np.int32(self.top_k), np.float32(self.top_p))


def filter_logits(logits_nv, options):
    """Logits scaled by 1/temperature, -inf outside the top-k and outside the nucleus of mass top_p. The options
    may be traced: each filter is a `lax.cond`, which runs only where it applies."""
    logits_nv = logits_nv / options.temperature

    def top_k(logits_nv):
        k = jnp.clip(options.top_k, 1, logits_nv.shape[-1])  # traced: the k-th largest from a sort, not lax.top_k
        kth_n1 = jax.lax.dynamic_slice_in_dim(-jnp.sort(-logits_nv, axis=-1), k - 1, 1, axis=-1)
        return jnp.where(logits_nv < kth_n1, -jnp.inf, logits_nv)

    def nucleus(logits_nv):
        # keep the most likely tokens until their mass reaches top_p: a token stays if the mass
        # of the tokens strictly more likely than it is still below top_p
        sorted_nv = jnp.sort(logits_nv, axis=-1)[:, ::-1]
        mass_before_nv = jnp.cumsum(jax.nn.softmax(sorted_nv), axis=-1) - jax.nn.softmax(sorted_nv)
        cutoff_n1 = jnp.min(jnp.where(mass_before_nv < options.top_p, sorted_nv, jnp.inf), axis=-1, keepdims=True)
        return jnp.where(logits_nv < cutoff_n1, -jnp.inf, logits_nv)

    logits_nv = jax.lax.cond(options.top_k > 0, top_k, lambda logits_nv: logits_nv, logits_nv)
    return jax.lax.cond(options.top_p < 1.0, nucleus, lambda logits_nv: logits_nv, logits_nv)


def gumbel_noise(key_words, index_n, pos_n, vocab_size):
    """Gumbel noise (N, V) for sample index_n[n] at position pos_n[n]: token v's comes from a hash of
    (i, t * V + v) under the two words `key_words` drawn from the seed's key: MurmurHash3's finaliser of
    each, keyed, then of the two combined (as dropout's masks, layers.hashed_bits). jax.random's Threefry
    is a rolled XLA loop on the CPU, whose iterations and copies were a third of a step at batch 1."""
    row_n1 = fmix32(index_n[:, None].astype(jnp.uint32) + key_words[0])
    column_nv = fmix32((pos_n[:, None] * vocab_size + jnp.arange(vocab_size)).astype(jnp.uint32) + key_words[1])
    bits_nv = fmix32(row_n1 ^ column_nv)
    # the top 23 bits as a float in [1, 2), minus 1: uniform on [0, 1), as jax.random.uniform makes it
    uniform_nv = jax.lax.bitcast_convert_type((bits_nv >> 9) | 0x3F800000, jnp.float32) - 1
    return -jnp.log(-jnp.log(jnp.maximum(uniform_nv, jnp.finfo(jnp.float32).tiny)))


def choose(key_words, index_n, pos_n, logits_nv, options):
    """One token per row: the argmax at temperature 0, else a draw from the filtered softmax (the
    argmax of the logits plus Gumbel noise, as jax.random.categorical draws)."""

    greedy = options.temperature == 0  # traced: both computed (a cond per token costs more than the draw)
    options = dataclasses.replace(options, temperature=jnp.where(greedy, 1.0, options.temperature))
    noise_nv = gumbel_noise(key_words, index_n, pos_n, logits_nv.shape[1])
    drawn_n = jnp.argmax(filter_logits(logits_nv, options) + noise_nv, axis=-1)
    return jnp.where(greedy, jnp.argmax(logits_nv, axis=-1), drawn_n).astype(jnp.int32)


def local_mesh(size, axis):
    """A mesh over as many local devices as divide `size` (one axis), or None for one device."""
    devices = math.gcd(size, jax.local_device_count())
    if devices == 1:
        return None
    return jax.make_mesh((devices,), (axis,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.local_devices()[:devices])


@functools.partial(jax.jit, static_argnames=("model", "rows", "chunk", "mesh", "compute_dtype"))
def sample_chunk(model, variables, seed, first, count, prefix_p, *, rows, chunk, options, mesh=None,
                 compute_dtype="float32"):
    """Samples first .. first + count - 1 (count <= chunk) on `rows` rows: tokens (chunk, block_size - 1),
    each the word then STOPs (rows past count stay STOP), and the number of decode steps run.

    Sample i draws its token at position t from a hash of (seed, i, t) only (gumbel_noise), so it
    is the same whatever the batch, the chunk, the device or the order in which rows finish. `prefix_p`
    (its letters, then STOPs to any length) is forced first; `options` (SampleOptions) are traced, as are the
    prefix's length, `first` and `count`: a new value compiles nothing. With a `mesh` (axis "rows", dividing rows
    and chunk), each device runs its share of the rows on its own consecutive share of the samples, with no
    communication, and the steps are per device.
    The parameters stay as given (float32); the matrix products run at `compute_dtype`'s precision
    (mmjax/precision.py: "float32", the default, is true float32 on a GPU too)."""
    # `seed`: a uint32 (seed_word); its key is made here, as jax.random.PRNGKey(seed) makes it outside (where it
    # is a few operations run one by one, each compiled at every start: about 0.08 s)
    key = jax.random.PRNGKey(seed)
    with precision.matmuls(compute_dtype):
        return sharded_decode(model, variables, key, first, count, prefix_p, rows, chunk, options, mesh)


def sharded_decode(model, variables, key, first, count, prefix_p, rows, chunk, options, mesh):
    """sample_chunk's body: decode_loop on one device, or on each device of `mesh` its share."""
    if mesh is None:
        return decode_loop(model, variables, key, first, count, prefix_p, rows, chunk, options)
    share = chunk // mesh.size

    def on_device(variables, key, first, count, prefix_p, options):
        start = share * jax.lax.axis_index("rows")
        tokens_nt, steps = decode_loop(model, variables, key, first + start, jnp.clip(count - start, 0, share),
                                       prefix_p, rows // mesh.size, share, options)
        return tokens_nt, steps[None]

    # check_vma off: the loop's carry starts device-invariant and becomes device-varying
    return jax.shard_map(on_device, mesh=mesh, in_specs=P(), out_specs=P("rows"), check_vma=False)(
        variables, key, first, count, prefix_p, options)


def decode_loop(model, variables, key, first, count, prefix_p, rows, chunk, options):
    """sample_chunk on one device."""
    max_len, end = model.block_size - 1, first + count
    key_words = jax.random.bits(key, (2,), jnp.uint32)  # once: a Threefry call is a loop on the CPU

    def body(loop):
        steps, next_index, carry, token_b, pos_b, index_b, tokens_nt = loop
        logits_bv, carry = model.apply(variables, carry, token_b, pos_b, method="decode_step")
        next_b = choose(key_words, index_b, pos_b, logits_bv, options)
        if prefix_p.shape[0]:  # its letters, then STOPs (a traced length: one program for every prefix)
            prefix_len = jnp.sum(prefix_p != STOP)
            next_b = jnp.where(pos_b < prefix_len, prefix_p[jnp.minimum(pos_b, prefix_p.shape[0] - 1)], next_b)
        live_b = index_b < end
        tokens_nt = tokens_nt.at[jnp.where(live_b, index_b - first, chunk), pos_b].set(next_b, mode="drop")
        # a finished row takes the next sample index (in row order), or idles once there is none
        ended_b = live_b & ((next_b == STOP) | (pos_b == max_len - 1))
        index_b = jnp.where(ended_b, next_index + jnp.cumsum(ended_b) - 1, index_b)
        pos_b = jnp.where(ended_b, 0, pos_b + 1)
        token_b = jnp.where(ended_b, STOP, next_b)
        return steps + 1, next_index + ended_b.sum(), carry, token_b, pos_b, index_b, tokens_nt

    def cond(loop):
        return jnp.any(loop[5] < end)

    index_b = first + jnp.arange(rows)
    carry = model.apply(variables, rows, method="decode_init")
    loop = (jnp.zeros((), jnp.int32), first + rows, carry, jnp.full((rows,), STOP, jnp.int32),
            jnp.zeros((rows,), jnp.int32), index_b, jnp.full((chunk, max_len), STOP, jnp.int32))
    loop = jax.lax.while_loop(cond, body, loop)
    return loop[6], loop[0]


def seed_word(seed):
    """An integer seed as sample_chunk takes it: modulo 2**32, as jax.random.PRNGKey keeps it (without x64)."""
    return np.uint32(seed % 2**32)


def power_of_two_at_least(n):
    return 1 << max(n - 1, 0).bit_length()


def sample(model, variables, seed, num_samples, batch_size=1000, prefix=(), options=SampleOptions(), first=0,
           compute_dtype="float32"):
    """Samples first .. first + num_samples - 1 as numpy (tokens, lengths), `batch_size` rows at a time;
    `compute_dtype` sets the precision of the matrix products (sample_chunk). Rows and the chunk are rounded up
    to a power of two of at least MIN_ROWS (the rows past the samples idle): -n 1 to 64 share one compiled
    sampler, as do -n 65 to 128."""
    rows = min(batch_size, max(MIN_ROWS, power_of_two_at_least(num_samples)))
    per_call = min(num_samples, rows * NAMES_PER_ROW)
    # MIN_ROWS rows on one device: -n up to 64 is the program that sampled while training (one device) on any host
    mesh = local_mesh(rows, "rows") if rows > MIN_ROWS else None
    devices = 1 if mesh is None else mesh.size
    # committed to their devices, whether host copies (the samples while training) or restored: one program for both
    variables = jax.device_put(variables, jax.local_devices()[0] if mesh is None else NamedSharding(mesh, P()))
    padded = np.full(model.block_size - 1, STOP, np.int32)  # the prefix, padded: its length traced
    padded[:len(prefix)] = prefix
    seed_u32, prefix_p = jnp.asarray(seed_word(seed)), jnp.asarray(padded)
    chunk = min(max(rows, power_of_two_at_least(per_call)), rows * NAMES_PER_ROW)
    call = dict(rows=rows, chunk=-(-chunk // devices) * devices, options=options.typed(), mesh=mesh,
                compute_dtype=compute_dtype)
    # every chunk is dispatched before the first is read: the devices run while the host copies
    counts = [min(per_call, first + num_samples - start) for start in range(first, first + num_samples, per_call)]
    chunks = [sample_chunk(model, variables, seed_u32, first + i * per_call, count, prefix_p, **call)[0]
              for i, count in enumerate(counts)]
    tokens = np.concatenate([tokens_nt[:count] for tokens_nt, count in zip(jax.device_get(chunks), counts)])
    return tokens, (tokens != STOP).sum(axis=1)


def decode_words(vocab, tokens_nt):
    """The word of each row (tokens then STOPs), vectorised: each row's characters viewed as one
    numpy string, whose trailing NULs (the STOPs) numpy drops."""
    chars_nt = np.array(["\0", *vocab.chars])[tokens_nt]
    return chars_nt.view(f"<U{tokens_nt.shape[1]}").ravel().tolist()


def sample_words(model, variables, vocab, seed, num_samples, prefix="", **kwargs):
    return decode_words(vocab, sample(model, variables, seed, num_samples, prefix=vocab.encode(prefix), **kwargs)[0])


FILTERS = ("suffix", "contains", "regex", "min_length", "max_length")  # Constraint's fields besides the prefix


@dataclasses.dataclass(frozen=True)
class Constraint:
    """What every name must satisfy: the prefix, which the sampler forces (exact by construction), and
    the filters, which leave the other names of the sample stream out (so the kept names are the
    model's samples given the constraint, exactly). `regex` is Python's re.fullmatch on the whole
    name; lengths count the whole name, prefix included."""

    prefix: str = ""
    suffix: str = ""
    contains: str = ""
    regex: str | None = None
    min_length: int | None = None
    max_length: int | None = None

    @property
    def filters(self):
        """Whether anything besides the prefix is asked (the plain stream needs no filter otherwise)."""
        return bool(self.suffix or self.contains or self.regex is not None or self.min_length is not None
                    or self.max_length is not None)

    def accepts(self, word):
        return (word.startswith(self.prefix) and word.endswith(self.suffix) and self.contains in word
                and (self.min_length is None or len(word) >= self.min_length)
                and (self.max_length is None or len(word) <= self.max_length)
                and (self.regex is None or re.fullmatch(self.regex, word) is not None))

    def describe(self):
        """The filters, as the command line writes them: "--suffix lyn --min-length 5"."""
        given = [(f, getattr(self, f)) for f in FILTERS if getattr(self, f) not in ("", None)]
        return " ".join(f"--{f.replace('_', '-')} {value}" for f, value in given)

    def check(self, vocab):
        """A UserError for a constraint no name of the model can satisfy (or a bad regex), before any draw."""
        if len(self.prefix) >= vocab.block_size:
            raise UserError(f"prefix {self.prefix!r} is longer than the longest word ({vocab.max_word_length}): "
                            "shorten it")
        for flag, text in (("prefix", self.prefix), ("suffix", self.suffix), ("contains", self.contains)):
            unknown = "".join(sorted(set(text) - set(vocab.chars)))
            if unknown:
                raise UserError(f"{flag} has characters {unknown!r} that are not in the vocabulary: "
                                f"use only {''.join(vocab.chars)!r}")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as e:
                raise UserError(f"regex {self.regex!r} is not a valid Python regular expression ({e}): fix it") from None
        lowest, highest = max(self.min_length or 0, len(self.prefix), 1), vocab.max_word_length
        if self.max_length is not None:
            highest = min(highest, self.max_length)
        if lowest > highest:
            raise UserError(f"no name can have from {lowest} to {highest} characters (prefix {self.prefix!r}, "
                            f"the longest word has {vocab.max_word_length}, min_length {self.min_length}, "
                            f"max_length {self.max_length}): widen the lengths")


def draw_words(model, variables, vocab, seed, num_samples, *, exclude=frozenset(), unique=False,
               constraint=Constraint(), batch_size=1000, **kwargs):
    """The first num_samples words in sample order that are not empty, not in `exclude`, (`unique`) not
    drawn before and that `constraint` accepts, and the number of samples drawn to get them; a UserError
    after DRAWS_PER_NAME (CONSTRAINED_DRAWS_PER_NAME with filters) * num_samples draws."""
    limit, draws = (CONSTRAINED_DRAWS_PER_NAME if constraint.filters else DRAWS_PER_NAME) * num_samples, 0
    size = min(max(2 * num_samples, batch_size), batch_size * NAMES_PER_ROW)  # the same every draw: one compile
    kept, seen = [], set()
    while draws < limit:
        words = sample_words(model, variables, vocab, seed, size, first=draws, batch_size=batch_size, **kwargs)
        for draws, word in enumerate(words[:limit - draws], draws + 1):
            if word and word not in exclude and word not in seen and constraint.accepts(word):
                kept.append(word)
                if unique:
                    seen.add(word)
                if len(kept) == num_samples:
                    return kept, draws
    kind = " ".join(["distinct"] * unique + ["new"] * bool(exclude) + ["names"])
    if not constraint.filters:
        raise UserError(f"found only {len(kept)} {kind} of the {num_samples} asked after {draws} draws "
                        f"({DRAWS_PER_NAME} per name asked): ask for fewer, or raise --temperature")
    raise UserError(f"found only {len(kept)} {kind} with {constraint.describe()} of the {num_samples} asked after "
                    f"{draws} draws ({CONSTRAINED_DRAWS_PER_NAME} per name asked), an acceptance rate of "
                    f"{len(kept) / draws:.3%}: ask for fewer, loosen the constraint, or raise --temperature")


def report(words, dataset):
    """makemore's three lists: samples seen in train, seen in test, and new; then the novelty rate."""
    train, test = set(dataset.train_words + dataset.val_words), set(dataset.test_words)  # val: training words held out
    groups = {"in train": [w for w in words if w in train],
              "in test": [w for w in words if w in test and w not in train],
              "new": [w for w in words if w not in train and w not in test]}
    lines = []
    for name, group in groups.items():
        lines += ["-" * 80, f"{len(group)} samples that are {name}:", *group]
    novelty = len(groups["new"]) / max(len(words), 1)
    return "\n".join(lines + ["-" * 80, f"novelty: {novelty:.1%} of {len(words)} samples are new"])
