"""mmjax computes exactly what makemore.py's PyTorch models compute (mmjax/torch_models.py, written
from its behaviour), given the same weights moved across by mmjax.interop; and its optimiser steps
as torch.optim.AdamW does. The logits, loss and gradients are compared with the reference's computed in
float64 from the same weights (the exact values: only mmjax's float32 rounding is measured, never torch's,
whose sums' order depends on its threads); torch runs on one thread (deterministic, and several times
faster at these sizes)."""

import contextlib
import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import interop, precision
from mmjax.config import base_config
from mmjax.losses import cross_entropy
from mmjax.optimizers import make_optimizer
from support import one_torch_thread

torch = pytest.importorskip("torch")
from mmjax import torch_models  # noqa: E402

V, T = 27, 16


@pytest.fixture(autouse=True)
def true_float32():
    """mmjax's float32 (compute_dtype's default): its products at the highest precision, which a GPU would
    otherwise run in TF32 (on the CPU it changes nothing); the programs here call the models directly."""
    with precision.matmuls("float32"):
        yield


@pytest.fixture(autouse=True)
def torch_on_one_thread():
    """The AdamW trajectories' float32 sums in one order, whatever ran before."""
    with one_torch_thread():
        yield


@contextlib.contextmanager
def in_float64():
    """torch's tensors made inside the models (masks, zeros) in float64 too."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)


def exact(reference, idx, targets=None):
    """The reference's logits and loss (and, with targets, its gradients, on the copy returned) in float64:
    a float64 copy of its float32 weights, the same values."""
    reference = copy.deepcopy(reference).double()
    with in_float64():
        logits, loss = reference(idx, targets)
        if targets is not None:
            loss.backward()
    return reference, logits.detach().numpy(), loss


def reference_model(model_type, seed=0):
    """A PyTorch model with every tensor random (zero-initialised ones would hide mistakes)."""
    torch.manual_seed(seed)
    reference = torch_models.create(model_type, V, T)
    with torch.no_grad():
        for p in reference.parameters():
            if not p.any():
                p.normal_()
    return reference


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    idx, targets = torch.randint(0, V, (8, T), generator=g), torch.randint(0, V, (8, T), generator=g)
    targets[:, -3:] = -1
    return idx, targets, jnp.asarray(idx.numpy().copy()), jnp.asarray(targets.numpy().copy())


def mean_nll(model):
    def loss(params, x_bt, y_bt):
        nll_sum, count = cross_entropy(model.apply({"params": params}, x_bt), y_bt)
        return nll_sum / count
    return loss


@pytest.mark.parametrize("model_type", interop.MAKEMORE_TYPES)
def test_logits_loss_and_gradients_match_pytorch(model_type):
    reference = reference_model(model_type)
    model, variables = interop.from_makemore(reference.state_dict(), model_type, block_size=T)
    idx, targets, x_bt, y_bt = batch(0)
    reference, logits_ref, loss_ref = exact(reference, idx, targets)
    # compiled, as training runs them (op by op, the Transformer's takes 240 compilations of single operations)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, x_bt), logits_ref, atol=1e-5)
    loss, grads = jax.jit(jax.value_and_grad(mean_nll(model)))(variables["params"], x_bt, y_bt)
    assert float(loss) == pytest.approx(loss_ref.item(), abs=1e-6)
    grads = interop.to_makemore(model_type, {"params": grads})
    named = dict(reference.named_parameters())
    assert set(grads) == set(named) | set(dict(reference.named_buffers()))
    for name, p in named.items():
        scale = p.grad.abs().max().item()
        assert scale > 0, name  # every tensor is exercised
        np.testing.assert_allclose(grads[name], p.grad.numpy(), atol=1e-5 * scale, err_msg=name)


@pytest.mark.parametrize("model_type", ["transformer", "gru"])
def test_twenty_adamw_steps_match_pytorch(model_type):
    reference = reference_model(model_type)
    model, variables = interop.from_makemore(reference.state_dict(), model_type, block_size=T)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=5e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    tx = make_optimizer(base_config())
    params, opt_state = variables["params"], tx.init(variables["params"])

    @jax.jit
    def adamw_step(params, opt_state, x_bt, y_bt):
        updates, opt_state = tx.update(jax.grad(mean_nll(model))(params, x_bt, y_bt), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for step in range(20):
        idx, targets, x_bt, y_bt = batch(step)
        optimizer.zero_grad()
        reference(idx, targets)[1].backward()
        optimizer.step()
        params, opt_state = adamw_step(params, opt_state, x_bt, y_bt)
    got = interop.to_makemore(model_type, {"params": params})
    for name, p in reference.named_parameters():
        want = p.detach().numpy().copy()
        if name.endswith("attn.c_attn.bias"):
            # The key bias has no true gradient (it shifts every score of a query equally), so AdamW
            # turns each side's rounding noise into steps of its own: compare the rest.
            got[name][64:128] = want[64:128] = 0.0
        np.testing.assert_allclose(got[name], want, atol=1e-5, err_msg=name)


def test_lstm_is_torchs_lstm_cell_in_the_rnn_frame():
    reference = reference_model("lstm")
    model, variables = interop.from_makemore(reference.state_dict(), "lstm", block_size=T)
    idx, _, x_bt, _ = batch(1)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, x_bt), exact(reference, idx)[1], atol=1e-5)
