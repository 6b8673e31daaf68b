"""Weights move between makemore.py's model.pt and mmjax unchanged, through the API and the commands."""

import json
import pickle

import pytest

from mmjax import cli, interop
from mmjax.errors import UserError
from support import one_torch_thread

torch = pytest.importorskip("torch")
from mmjax import torch_models  # noqa: E402

V, T = 9, 8  # the vocabulary and block size of conftest's words


@pytest.fixture(autouse=True)
def torch_on_one_thread():
    with one_torch_thread():
        yield


def assert_same_tensors(back, original, model_type):
    """Identical tensors; the LSTM's flax has one bias where nn.LSTMCell has two: it comes back as bias_ih,
    with bias_hh zero, the same sum."""
    assert set(back) == set(original)  # mask buffers recreated too
    biases = {"cell.bias_ih", "cell.bias_hh"} if model_type == "lstm" else set()
    for name in set(original) - biases:
        assert torch.equal(back[name], original[name]), name
    if biases:
        assert torch.equal(back["cell.bias_ih"], original["cell.bias_ih"] + original["cell.bias_hh"])
        assert not back["cell.bias_hh"].any()
    fresh = torch_models.create(model_type, V, T, n_layer=1, n_embd=16, n_embd2=16)
    fresh.load_state_dict(back, strict=True)  # what makemore.py does with --resume / --sample-only


@pytest.mark.parametrize("model_type", interop.CONVERTIBLE_TYPES)
def test_model_pt_round_trips_with_identical_tensors(model_type, tmp_path):
    torch.manual_seed(1)
    original = torch_models.create(model_type, V, T, n_layer=1, n_embd=16, n_embd2=16).state_dict()
    torch.save(original, tmp_path / "model.pt")
    _, variables = interop.from_makemore(tmp_path / "model.pt", model_type, block_size=T)
    interop.save_model_pt(tmp_path / "back.pt", model_type, variables)
    assert_same_tensors(torch.load(tmp_path / "back.pt", weights_only=True), original, model_type)


def test_lstm_import_export_and_compare_commands(words_file, tmp_path, capsys):
    """The LSTM through the commands (`python -m mmjax.interop`'s main, in this process): model.pt in
    nn.LSTMCell's layout -> work dir -> model.pt -> compare."""
    torch.manual_seed(3)
    original = torch_models.create("lstm", V, T, n_embd=16, n_embd2=16).state_dict()
    torch.save(original, tmp_path / "model.pt")
    interop.main(["import", str(tmp_path / "model.pt"), "-i", str(words_file), "-o", str(tmp_path / "run"),
                  "--type", "lstm"])
    interop.main(["export", "-o", str(tmp_path / "run"), str(tmp_path / "back.pt")])
    assert_same_tensors(torch.load(tmp_path / "back.pt", weights_only=True), original, "lstm")
    capsys.readouterr()  # compare was torch's RuntimeError: missing cell.weight_ih, ...
    interop.main(["compare", str(tmp_path / "back.pt"), "-i", str(words_file), "--type", "lstm"])
    rows = {line.split()[0]: float(line.split()[-1]) for line in capsys.readouterr().out.splitlines()[1:]}
    assert {"wte", "lm_head", "logits", "loss"} <= set(rows) and max(rows.values()) < 1e-5


def test_a_shape_that_does_not_fit_names_the_key_and_both_shapes():
    state = torch_models.create("mlp", V, T).state_dict()
    state["mlp.2.bias"] = torch.zeros(5)
    with pytest.raises(UserError, match=r"mlp\.2\.bias has shape \(5,\) but this mlp needs \(9,\)"):
        interop.from_makemore(state, "mlp")


def test_a_missing_key_is_named():
    state = torch_models.create("gru", V, T).state_dict()
    del state["cell.xh_to_r.weight"]
    with pytest.raises(UserError, match=r"missing \['cell\.xh_to_r\.weight'\]"):
        interop.from_makemore(state, "gru", block_size=T)
    state = torch_models.create("lstm", V, T).state_dict()
    del state["cell.bias_hh"]
    with pytest.raises(UserError, match=r"nn\.LSTMCell .* missing \['cell\.bias_hh'\]"):
        interop.from_makemore(state, "lstm", block_size=T)


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_model_pt_is_never_unpickled_beyond_tensors(tmp_path, capsys):
    torch.save({"logits": torch.zeros(V, V), "evil": Payload()}, tmp_path / "model.pt", pickle_module=pickle)
    with pytest.raises(UserError, match="cannot read"):
        interop.from_makemore(tmp_path / "model.pt", "bigram", block_size=T)
    assert "unpickled!" not in capsys.readouterr().out


def test_import_sample_resume_export_and_compare(words_file, tmp_path, capsys):
    torch.manual_seed(2)
    reference = torch_models.create("transformer", V, T, n_layer=1, n_head=2, n_embd=16)
    torch.save(reference.state_dict(), tmp_path / "model.pt")
    workdir = tmp_path / "run"
    interop.main(["import", str(tmp_path / "model.pt"), "-i", str(words_file), "-o", str(workdir),
                  "--type", "transformer", "--n-head", "2"])
    config = json.loads((workdir / "config.json").read_text())
    assert (config["n_layer"], config["n_head"], config["n_embd"]) == (1, 2, 16)
    cli.sample_main(cli.sample_parser().parse_args(["-o", str(workdir), "-n", "5"]))
    cli.train_main(cli.train_parser().parse_args(["-o", str(workdir), "--resume", "--max-steps", "20",
                                                  "--eval-every", "10", "--log-every", "10", "--no-progress"]))
    interop.main(["export", "-o", str(workdir), str(tmp_path / "back.pt")])
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert set(back) == set(reference.state_dict())
    assert not torch.equal(back["lm_head.weight"], reference.state_dict()["lm_head.weight"])  # trained on
    capsys.readouterr()
    interop.main(["compare", str(tmp_path / "model.pt"), "-i", str(words_file), "--type", "transformer",
                  "--n-head", "2"])
    rows = {line.split()[0]: float(line.split()[-1]) for line in capsys.readouterr().out.splitlines()[1:]}
    assert {"transformer.h.0.attn.c_attn", "transformer.ln_f", "logits", "loss"} <= set(rows)
    assert max(rows.values()) < 1e-5


def test_import_refuses_weights_of_another_vocabulary(words_file, tmp_path):
    torch.save(torch_models.create("bigram", V + 1, T).state_dict(), tmp_path / "model.pt")
    with pytest.raises(UserError, match="vocabulary of 10 tokens"):
        interop.import_main(interop_args("import", tmp_path / "model.pt", words_file, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def interop_args(command, model_pt, words_file, workdir):
    import argparse
    return argparse.Namespace(command=command, model_pt=str(model_pt), input_file=str(words_file),
                              work_dir=str(workdir), type="bigram", n_head=None, seed=3407, dedupe=False)


def test_models_with_no_makemore_counterpart_are_refused():
    with pytest.raises(UserError, match="no makemore counterpart"):
        interop.to_makemore("wavenet", {"params": {}})
