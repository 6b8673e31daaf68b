"""compute_dtype (mmjax/precision.py): "float32" is true float32 on every device. On a GPU jax would run
float32 matrix products in TF32; the compiled programs of training, evaluation and sampling ask for the
highest precision on every product, which the CPU tests read off their lowered StableHLO. On the CPU the
highest precision is what jax computed before, bit for bit."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import fresh_state, names_batch, small_config
from mmjax import cli, losses, precision, sampling, scoring, steps
from mmjax.models import create_model

V, T = 27, 12
PRECISION = re.compile(r"precision = \[(\w+), (\w+)\]")
WANTED = {"float32": "HIGHEST", "tf32": "HIGH", "bfloat16": "DEFAULT"}


def product_precisions(text):
    """The precision of each matrix product and convolution of a lowered program's StableHLO text."""
    lines = [line for line in text.splitlines() if re.search(r"stablehlo\.(dot_general|convolution)\b", line)]
    assert lines, "no matrix product in the program"
    found = [PRECISION.search(line) for line in lines]
    return {m.group(1) if m and m.group(1) == m.group(2) else (m.groups() if m else "unset") for m in found}


@pytest.fixture(scope="module")
def setup():
    config = small_config()
    state = fresh_state(config, _vocab())
    x_bt, y_bt = names_batch(0, batch_size=8, vocab_size=V, block_size=T)
    return config, state, x_bt, y_bt


def _vocab():
    from mmjax.input_pipeline import Vocab

    return Vocab(tuple(chr(ord("a") + i) for i in range(V - 1)), T - 1)


def test_every_product_of_training_evaluation_and_sampling_is_float32_at_highest(setup):
    """The GPU problem, caught on the CPU: the float32 programs' products say HIGHEST, the gradient's included
    (the population's evaluation, the diagnostics and the others go through the same losses.forward;
    scoring's kernels set it themselves)."""
    config, state, x_bt, y_bt = setup
    states = jax.tree.map(lambda a: jnp.stack([a, a]), state)
    model = create_model(config, V, T)
    lowered = {
        "train": steps.train_steps.lower(state, x_bt, y_bt, num_steps=1, batch_size=8),
        "eval": steps.eval_step.lower(state, x_bt, y_bt),
        "population": steps.population_train_steps.lower(states, x_bt, y_bt, num_steps=1, batch_size=8),
        "sampling": sampling.sample_chunk.lower(model, {"params": state.params}, sampling.seed_word(0), 0, 8,
                                                jnp.zeros((0,), jnp.int32), rows=4, chunk=8,
                                                options=sampling.SampleOptions()),
        "scoring": scoring.surprisal_kernel.lower(model, {"params": state.params}, x_bt, jnp.full((8,), 3)),
    }
    for name, program in lowered.items():
        assert product_precisions(program.as_text()) == {"HIGHEST"}, name


@pytest.mark.parametrize("compute_dtype", ["tf32", "bfloat16"])
def test_the_fast_modes_ask_for_their_precision(setup, compute_dtype):
    """tf32: HIGH, TF32 on a GPU; bfloat16: jax's default. compute_dtype is a static argument: each compiles
    its own program."""
    config, state, x_bt, y_bt = setup
    text = steps.train_steps.lower(state, x_bt, y_bt, num_steps=1, batch_size=8, compute_dtype=compute_dtype).as_text()
    assert product_precisions(text) == {WANTED[compute_dtype]}


def test_manual_gradients_ask_for_highest():
    """mlp_bn's manual backward pass (lecture 4) computes its own products."""
    from mmjax import backprop

    config = small_config("mlp_bn")
    state = fresh_state(config, _vocab())
    x_bt, y_bt = names_batch(0, batch_size=8, vocab_size=V, block_size=T)
    text = steps.train_steps.lower(state, x_bt, y_bt, num_steps=1, batch_size=8,
                                   value_and_grad=backprop.value_and_grad).as_text()
    assert product_precisions(text) == {"HIGHEST"}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="on a GPU, highest and default precision differ")
def test_on_the_cpu_highest_is_what_jax_computed_before_bit_for_bit(setup, monkeypatch):
    """Two train steps and the logits after them at compute_dtype float32 (highest) against the same program
    at jax's default precision, as mmjax compiled it before compute_dtype set one: the same bits."""
    config, state, x_bt, y_bt = setup

    def run():  # a fresh program each time: the precision is read when it is traced
        def two_steps(state):
            state, step_losses = jax.lax.scan(lambda s, _: steps.train_step(s, x_bt, y_bt, 8), state, length=2)
            return step_losses, state.params, losses.forward(state, state.params, x_bt)[0]
        return jax.device_get(jax.jit(two_steps)(state))

    highest = run()
    monkeypatch.setitem(precision.COMPUTE_DTYPES, "float32", (jnp.float32, "default"))
    before = run()
    for a, b in zip(jax.tree.leaves(highest), jax.tree.leaves(before)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_float32_products_are_float32_on_this_device():
    """On any device (the CPU here, a GPU in scripts/device_check.sh): a float32 product is within float32
    rounding of float64's; on a GPU, tf32 is visibly coarser."""
    a, b = (np.random.default_rng(i).standard_normal((256, 256)).astype(np.float32) for i in (0, 1))
    exact = a.astype(np.float64) @ b.astype(np.float64)
    error = {}
    for compute_dtype in ("float32", "tf32"):
        with precision.matmuls(compute_dtype):
            got = jax.jit(jnp.matmul)(a, b)
        error[compute_dtype] = float(np.abs(np.asarray(got, np.float64) - exact).max() / np.abs(exact).max())
    assert error["float32"] < 1e-6, error
    if jax.default_backend() == "gpu":
        assert error["tf32"] > 1e-5, error  # TF32's 10-bit mantissa: about 1e-3


def test_an_unknown_compute_dtype_is_one_line_naming_the_choices(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit:
        cli.train_command(["-o", str(tmp_path / "run"), "--compute-dtype", "float16"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1
    assert err == "error: unknown compute_dtype 'float16': choose one of float32, tf32, bfloat16\n"
    assert not (tmp_path / "run").exists()
