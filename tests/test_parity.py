"""The Flax Transformer and optimiser compute exactly what makemore's PyTorch ones do."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config import base_config
from mmjax.input_pipeline import Vocab
from mmjax.train import create_train_state, loss_fn

torch = pytest.importorskip("torch")
from torch_models import Transformer as TorchTransformer  # noqa: E402

V, T = 27, 16


def to_torch_name(path):
    """'h_0/attn/c_attn/kernel' -> 'transformer.h.0.attn.c_attn.weight'."""
    *modules, leaf = path.split("/")
    name = ".".join(re.sub(r"^h_(\d+)$", r"h.\1", m) for m in modules)
    name += ".bias" if leaf == "bias" else ".weight"
    return name if name.startswith("lm_head") else "transformer." + name


def flax_view(tensors_by_name, params):
    """`params`' tree filled from torch tensors (kernels transposed), one to one."""
    def leaf(path, _):
        key = "/".join(k.key for k in path)
        array = tensors_by_name[to_torch_name(key)].detach().numpy().copy()  # jax may alias numpy memory
        return jnp.asarray(array.T if key.endswith("kernel") else array, jnp.float32)
    return jax.tree_util.tree_map_with_path(leaf, params)


@pytest.fixture
def models():
    torch.manual_seed(0)
    reference = TorchTransformer(V, T)
    state = create_train_state(base_config(), Vocab(tuple("abcdefghijklmnopqrstuvwxyz"), T - 1))
    names = [to_torch_name("/".join(k.key for k in p)) for p, _ in jax.tree_util.tree_leaves_with_path(state.params)]
    assert sorted(names) == sorted(dict(reference.named_parameters()))
    return reference, state.replace(params=flax_view(dict(reference.named_parameters()), state.params))


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    idx, targets = torch.randint(0, V, (8, T), generator=g), torch.randint(0, V, (8, T), generator=g)
    targets[:, -3:] = -1
    return idx, targets, jnp.asarray(idx.numpy()), jnp.asarray(targets.numpy())


def test_logits_loss_and_gradients_match_pytorch(models):
    reference, state = models
    idx, targets, x_bt, y_bt = batch(0)
    logits_ref, loss_ref = reference(idx, targets)
    loss_ref.backward()
    logits = state.apply_fn({"params": state.params}, x_bt)
    np.testing.assert_allclose(logits, logits_ref.detach().numpy(), atol=1e-5)
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state, x_bt, y_bt)
    assert float(loss) == pytest.approx(loss_ref.item(), abs=1e-6)
    expected = flax_view({k: p.grad for k, p in reference.named_parameters()}, grads)
    key_bias_grad = grads["h_0"]["attn"]["c_attn"]["bias"][64:128]
    assert float(jnp.abs(key_bias_grad).max()) < 1e-6  # see the next test
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        want = expected
        for k in path:
            want = want[k.key]
        np.testing.assert_allclose(grad, want, atol=1e-5 * float(jnp.abs(want).max()), err_msg=str(path))


def test_twenty_adamw_steps_match_pytorch(models):
    reference, state = models
    optimizer = torch.optim.AdamW(reference.parameters(), lr=5e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    grad_fn = jax.jit(jax.grad(lambda params, state, x_bt, y_bt: loss_fn(params, state, x_bt, y_bt)[0]))
    for step in range(20):
        idx, targets, x_bt, y_bt = batch(step)
        optimizer.zero_grad()
        reference(idx, targets)[1].backward()
        optimizer.step()
        state = state.apply_gradients(grads=grad_fn(state.params, state, x_bt, y_bt))
    expected = flax_view(dict(reference.named_parameters()), state.params)
    # The key bias has no true gradient (adding it shifts every score of a query equally), so
    # AdamW turns each side's rounding noise into steps of its own: compare it by that fact instead.
    for block in (state.params, expected):
        for i in range(4):
            key_bias = block[f"h_{i}"]["attn"]["c_attn"]["bias"]
            block[f"h_{i}"]["attn"]["c_attn"]["bias"] = key_bias.at[64:128].set(0.0)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
