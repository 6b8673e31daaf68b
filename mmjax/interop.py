"""Moving weights between makemore.py (PyTorch) and mmjax, and comparing their forward passes.

    python -m mmjax.interop import model.pt -i names.txt -o WORKDIR --type transformer [--n-head 4]
    python -m mmjax.interop export -o WORKDIR model.pt
    python -m mmjax.interop compare model.pt -i names.txt --type transformer

Names map one to one: the flax path `h_0/attn/c_attn/kernel` is makemore's
`transformer.h.0.attn.c_attn.weight` (Linear kernels are transposed; `embedding` and LayerNorm
`scale` are `weight`); the LSTM's per-gate tensors are stacked as torch's nn.LSTMCell stacks them.
torch is needed only to read or write model.pt and for `compare`.
"""

import functools
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import inference, input_pipeline, losses, precision, state, steps
from mmjax.config import base_config
from mmjax.errors import Parser, UserError, run
from mmjax.models import create_model, model_fields
from mmjax.workdir import WorkDir

MAKEMORE_TYPES = ("bigram", "mlp", "rnn", "gru", "bow", "transformer")  # and the LSTM in the same frame
CONVERTIBLE_TYPES = MAKEMORE_TYPES + ("lstm",)
MASK_BUFFER = re.compile(r"^(transformer\.h\.\d+\.attn\.bias|context_block\.cbow\.bias)$")
LSTM_GATES = "ifgo"  # the order in which torch's nn.LSTMCell stacks its gates' rows
LSTM_TENSORS = ("cell.weight_ih", "cell.weight_hh", "cell.bias_ih", "cell.bias_hh")


def makemore_module(model_type, modules):
    """makemore's name of the flax module at path `modules`: `h_0` is `h.0`, under `transformer.`."""
    # makemore's ModuleList `h` and Sequential `mlp` number their entries `h.0`; flax names them `h_0`
    parts = [re.sub(r"^(h|mlp)_(\d+)$", r"\1.\2", m) for m in modules]
    if model_type == "transformer" and parts and parts[0] != "lm_head":
        parts.insert(0, "transformer")
    return parts


def makemore_name(model_type, path):
    """makemore's name of the flax parameter at `path` (a tuple of names)."""
    *modules, leaf = path
    leaf = {"kernel": "weight", "embedding": "weight", "scale": "weight"}.get(leaf, leaf)
    return ".".join(makemore_module(model_type, modules) + [leaf])


def named_leaves(tree):
    return [(tuple(k.key for k in path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def check_convertible(model_type):
    if model_type not in CONVERTIBLE_TYPES:
        raise UserError(f"{model_type!r} has no makemore counterpart (BatchNorm statistics or counts): "
                        f"convert one of {', '.join(CONVERTIBLE_TYPES)}")


def mask_buffers(model_type, tensors):
    """makemore's lower-triangular mask buffers for these parameters."""
    pos = tensors.get("transformer.wpe.weight", tensors.get("wpe.weight"))
    if model_type not in ("bow", "transformer"):
        return {}
    tril_tt = np.tril(np.ones((len(pos), len(pos)), np.float32))
    if model_type == "bow":
        return {"context_block.cbow.bias": tril_tt[None]}
    layers = sorted({int(k.split(".")[2]) for k in tensors if k.startswith("transformer.h.")})
    return {f"transformer.h.{i}.attn.bias": tril_tt[None, None] for i in layers}


def lstm_to_torch(tensors):
    """flax's per-gate LSTM tensors (`cell.ii.weight`, ..., `cell.ho.bias`) as torch's nn.LSTMCell stacks
    them; flax has one bias where torch has two: it goes to bias_ih, and bias_hh is zero."""
    stack = lambda name: np.concatenate([tensors.pop(name.format(g)) for g in LSTM_GATES])
    weight_ih, weight_hh, bias = stack("cell.i{}.weight"), stack("cell.h{}.weight"), stack("cell.h{}.bias")
    return {**tensors, **dict(zip(LSTM_TENSORS, (weight_ih, weight_hh, bias, np.zeros_like(bias))))}


def lstm_from_torch(tensors):
    """torch's nn.LSTMCell tensors split into flax's per-gate ones (the two biases added)."""
    missing = [name for name in LSTM_TENSORS if name not in tensors]
    if missing:
        raise UserError(f"the weights are not a torch nn.LSTMCell in makemore's frame: missing {missing}")
    arrays = [tensors.pop(name) for name in LSTM_TENSORS]
    uneven = [name for name, array in zip(LSTM_TENSORS, arrays) if len(array) % len(LSTM_GATES)]
    if uneven or arrays[2].shape != arrays[3].shape:
        raise UserError(f"{(uneven or LSTM_TENSORS[2:])[0]} does not stack 4 gates of one size as nn.LSTMCell does: "
                        "pass an LSTM's state dict")
    weight_ih, weight_hh, bias = (np.split(a, len(LSTM_GATES)) for a in (arrays[0], arrays[1], arrays[2] + arrays[3]))
    for g, w_i, w_h, b in zip(LSTM_GATES, weight_ih, weight_hh, bias):
        tensors.update({f"cell.i{g}.weight": w_i, f"cell.h{g}.weight": w_h, f"cell.h{g}.bias": b})
    return tensors


def read_state_dict(state_dict):
    """name -> numpy array, from a model.pt path (read with weights_only=True: no arbitrary
    unpickling) or from a mapping of numpy arrays or torch tensors. Mask buffers are dropped."""
    if not hasattr(state_dict, "items"):
        import torch

        try:
            state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"{state_dict} does not exist: pass the path of makemore's model.pt") from None
        except Exception as e:  # refused unpickling and corrupt files alike
            raise UserError(f"cannot read {state_dict} as a state dict ({type(e).__name__}): pass a model.pt "
                            "written by torch.save(model.state_dict(), path)") from None
    return {k: np.array(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
            for k, v in state_dict.items() if not MASK_BUFFER.match(k)}


def shown_sizes(model_type, tensors):
    """The sizes that the tensors' shapes show (n_head never shows; rnn/gru hide block_size)."""
    get = lambda name, axis: tensors[name].shape[axis] if name in tensors else None
    prefix = "transformer." if model_type == "transformer" else ""
    sizes = {"vocab_size": get("logits", 0) or get("lm_head.weight", 0) or get("mlp.2.weight", 0),
             "block_size": get(prefix + "wpe.weight", 0), "n_embd": get(prefix + "wte.weight", 1),
             "n_embd2": get("mlp.0.weight", 0) or get("context_block.mlp.c_fc.weight", 0)
             or (get("lm_head.weight", 1) if model_type in ("rnn", "gru", "lstm") else None)}
    if model_type == "mlp" and sizes["n_embd"] and get("mlp.0.weight", 1):
        sizes["block_size"] = get("mlp.0.weight", 1) // sizes["n_embd"]
    if model_type == "transformer":
        sizes["n_layer"] = len({k.split(".")[2] for k in tensors if k.startswith("transformer.h.")})
    return {k: v for k, v in sizes.items() if v}


def from_makemore(state_dict, model_type, **model_config):
    """(model, variables) holding makemore's weights: model.apply(variables, idx_bt) is the logits.

    Sizes come from the tensors' shapes where they show, then from `model_config` (which wins),
    then makemore's defaults (n_head 4). rnn and gru need block_size (max word length + 1).
    """
    check_convertible(model_type)
    tensors = read_state_dict(state_dict)
    if model_type == "lstm":
        tensors = lstm_from_torch(tensors)
    sizes = {**shown_sizes(model_type, tensors), **model_config}
    for needed in ("vocab_size", "block_size"):
        if needed not in sizes:
            raise UserError(f"the {model_type} weights do not show {needed}: pass {needed}=...")
    config = base_config()
    config.update({"type": model_type, **({"cell": model_type} if model_type in ("rnn", "gru", "lstm") else {}),
                   **{k: v for k, v in sizes.items() if k not in ("vocab_size", "block_size")}})
    model = create_model(config, sizes["vocab_size"], sizes["block_size"])
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, sizes["block_size"]), jnp.int32))["params"]
    expected = {makemore_name(model_type, path) for path, _ in named_leaves(params)}
    if expected != set(tensors):
        raise UserError(f"the weights are not a makemore {model_type}: missing {sorted(expected - set(tensors))}, "
                        f"unexpected {sorted(set(tensors) - expected)}")

    def fill(path, leaf):
        path = tuple(k.key for k in path)
        name, transpose = makemore_name(model_type, path), path[-1] == "kernel"
        array = tensors[name].T if transpose else tensors[name]
        if array.shape != leaf.shape:
            want = leaf.shape[::-1] if transpose else leaf.shape
            raise UserError(f"{name} has shape {tensors[name].shape} but this {model_type} needs {want}: "
                            "pass the sizes it was trained with")
        return jnp.asarray(array, leaf.dtype)

    return model, {"params": jax.tree_util.tree_map_with_path(fill, params)}


def to_makemore(model_type, variables):
    """makemore's state dict as numpy arrays (mask buffers recreated), for these mmjax variables."""
    check_convertible(model_type)
    tensors = {makemore_name(model_type, path): np.array(leaf.T if path[-1] == "kernel" else leaf)
               for path, leaf in named_leaves(variables["params"])}
    if model_type == "lstm":
        tensors = lstm_to_torch(tensors)
    return {**tensors, **mask_buffers(model_type, tensors)}


def save_model_pt(path, model_type, variables):
    """Writes a model.pt that makemore.py loads with model.load_state_dict(torch.load(path))."""
    import torch

    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_makemore(model_type, variables).items()},
               path)


def import_main(args):
    """A work dir for makemore's weights and training file: sample.py and train.py --resume work on it."""
    workdir = WorkDir(args.work_dir)
    words = input_pipeline.read_words(args.input_file, dedupe=args.dedupe)
    dataset = input_pipeline.Dataset.from_words(words, args.seed)  # makemore's split for the same seed
    sizes = {k: v for k, v in (("n_head", args.n_head),) if v is not None}
    model, variables = from_makemore(args.model_pt, args.type, block_size=dataset.vocab.block_size, **sizes)
    if model.vocab_size != dataset.vocab.size:
        raise UserError(f"the weights have a vocabulary of {model.vocab_size} tokens, {args.input_file} gives "
                        f"{dataset.vocab.size}: pass the file the model was trained on")
    config = base_config()
    config.update(type=args.type, seed=args.seed, dedupe=args.dedupe,
                  **{name: getattr(model, name) for name in model_fields(args.type)})
    train_state = state.create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed))
    train_state = train_state.replace(params=variables["params"])
    x_nt, y_nt = dataset.vocab.encode_words(dataset.test_words or dataset.train_words)
    loss = steps.evaluate(train_state, x_nt, y_nt, config.eval_batch_size)
    workdir.create(config, dataset)
    workdir.checkpoints.save(int(train_state.step), latest=train_state, best=train_state, score=loss)
    print(f"{args.model_pt} -> {workdir.path}: a {args.type} of {model.vocab_size} tokens, test loss {loss:.4f}")


def export_main(args):
    workdir = WorkDir(args.work_dir, read_only=True)
    config, _, _, best = inference.load(workdir, args.member)
    save_model_pt(args.model_pt, config.type, {"params": best.params})
    print(f"{workdir.path} (step {int(best.step)}) -> {args.model_pt}")


def compare_main(args):
    """Per module, the largest difference between the PyTorch and mmjax forward passes."""
    import torch

    from mmjax import torch_models

    words = input_pipeline.read_words(args.input_file)
    vocab = input_pipeline.Vocab.from_words(words)
    sizes = {k: v for k, v in (("n_head", args.n_head),) if v is not None}
    model, variables = from_makemore(args.model_pt, args.type, block_size=vocab.block_size, **sizes)
    x_nt, y_nt = vocab.encode_words(words[:args.num_words])
    reference = torch_models.create(args.type, model.vocab_size, model.block_size,
                                    **{k: getattr(model, k) for k in ("n_layer", "n_head", "n_embd", "n_embd2")
                                       if hasattr(model, k)})
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in to_makemore(args.type, variables).items()})
    outputs = {}  # each module's first output (a hook that returned it would replace later outputs)
    for name, module in reference.named_modules():
        module.register_forward_hook(lambda m, i, out, name=name: None if name in outputs else outputs.update({name: out}))
    with torch.no_grad():
        logits_ref, loss_ref = reference(torch.from_numpy(x_nt).long(), torch.from_numpy(y_nt).long())
    forward = jax.jit(functools.partial(model.apply, capture_intermediates=True, mutable=["intermediates"]))
    with precision.matmuls("float32"):  # true float32 on a GPU too, as torch's float32 on the CPU
        logits, captured = forward(variables, jnp.asarray(x_nt))  # one program, not one per operation
    rows = []
    # a module's last captured output is its outermost call's (RowsDense records its inner Dense call first)
    for path, (*_, out) in flax.traverse_util.flatten_dict(captured["intermediates"]).items():
        name = ".".join(makemore_module(args.type, path[:-1]))  # path ends with "__call__"
        ours, theirs = out[0] if isinstance(out, tuple) else out, outputs.get(name)
        if isinstance(theirs, torch.Tensor) and tuple(theirs.shape) == tuple(ours.shape):
            rows.append((name, tuple(ours.shape), float(np.abs(np.asarray(ours) - theirs.numpy()).max())))
    nll_sum, count = losses.cross_entropy(logits, jnp.asarray(y_nt))
    rows += [("logits", tuple(logits.shape), float(np.abs(np.asarray(logits) - logits_ref.numpy()).max())),
             ("loss", (), abs(float(nll_sum / count) - loss_ref.item()))]
    width = max(len(r[0]) for r in rows)
    print(f"{'tensor':<{width}}  {'shape':<16} max |torch - mmjax|")
    for name, shape, diff in rows:
        print(f"{name:<{width}}  {str(shape):<16} {diff:.3g}")


def main(argv=None):
    parser = Parser(prog="python -m mmjax.interop", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("import", "makemore's model.pt and training file -> an mmjax work dir"),
                       ("compare", "per-module differences of the PyTorch and mmjax forward passes")):
        command = commands.add_parser(name, help=text)
        command.add_argument("model_pt", help="a model.pt written by makemore.py")
        command.add_argument("--input-file", "-i", required=True, help="the file the model was trained on")
        command.add_argument("--type", required=True, choices=CONVERTIBLE_TYPES)
        command.add_argument("--n-head", type=int, help="attention heads (the weights do not show it; default 4)")
    commands.choices["import"].add_argument("--work-dir", "-o", required=True)
    commands.choices["import"].add_argument("--seed", type=int, default=3407, help="makemore's --seed (the split)")
    commands.choices["import"].add_argument("--dedupe", action="store_true")
    commands.choices["compare"].add_argument("--num-words", type=int, default=100, help="words to run through both")
    export = commands.add_parser("export", help="an mmjax work dir's best checkpoint -> makemore's model.pt")
    export.add_argument("--work-dir", "-o", required=True)
    export.add_argument("model_pt")
    export.add_argument("--member", type=int, help="a population's member I (default: its best)")
    run({"import": import_main, "export": export_main, "compare": compare_main}[parser.parse_args(argv).command],
            parser, argv)


if __name__ == "__main__":
    main()
