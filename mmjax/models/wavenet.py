"""The hierarchical model of makemore lecture 5, written as causal dilated convolutions."""

from mmjax.errors import UserError
from mmjax.models.mlp_bn import CausalConvLM


class WaveNet(CausalConvLM):
    """WaveNet's stack of causal dilated convolutions (van den Oord et al. 2016), as in makemore
    lecture 5: each level fuses two consecutive elements of the level below (Linear without bias,
    BatchNorm, tanh). The lecture fuses pairs of one window; here level k is a convolution of width 2
    and dilation 2^(k-1) over the whole name, so the receptive field at t is exactly x[t-7..t]."""

    vocab_size: int
    block_size: int
    context: int = 8  # a power of two: log2(context) levels
    n_embd: int = 24
    n_embd2: int = 128

    def _convolutions(self):
        if self.context < 2 or self.context & (self.context - 1):
            raise UserError(f"wavenet context must be a power of two, got {self.context}: pass 2, 4, 8, 16, ...")
        return [(2, 2 ** k) for k in range(self.context.bit_length() - 1)]
