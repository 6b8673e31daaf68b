"""config.compute_dtype: the arithmetic of the model's passes, the same on every device.

    float32   parameters and passes in float32; matrix products (and convolutions) at precision "highest":
              true float32 on a GPU too, where jax would otherwise run float32 products in TF32 (10-bit
              mantissa) on Ampere and newer. On the CPU it is what jax does anyway, bit for bit. The default:
              mmjax's parity with PyTorch (1e-5 on logits) and its bit-identical resume rest on it.
    tf32      float32 storage, matrix products at precision "tensorfloat32" (TF32 on NVIDIA GPUs, bfloat16
              passes on TPUs): faster on a GPU, about 3 decimal digits per product.
    bfloat16  mixed precision: the passes in bfloat16, parameters and BatchNorm statistics stay float32;
              matrix products at jax's default precision.

The precision is set where the compiled functions are traced (losses.forward for training, evaluation and
the diagnostics, the manual backward pass, the sampler's decode loop), and compute_dtype is a static
argument of each, so changing it compiles them anew.
"""

import jax
import jax.numpy as jnp

# compute_dtype -> (the dtype of the passes, jax's matmul precision for them)
COMPUTE_DTYPES = {"float32": (jnp.float32, "highest"), "tf32": (jnp.float32, "tensorfloat32"),
                  "bfloat16": (jnp.bfloat16, "default")}


def pass_dtype(compute_dtype):
    """The dtype the passes compute in (parameters are cast to it)."""
    return COMPUTE_DTYPES[compute_dtype][0]


def matmuls(compute_dtype):
    """A context manager: the matrix products traced inside it run at `compute_dtype`'s precision."""
    return jax.default_matmul_precision(COMPUTE_DTYPES[compute_dtype][1])
