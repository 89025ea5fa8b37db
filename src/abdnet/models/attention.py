"""Channel and position attention (section 3.1 of the paper, after DANet, Fu et al. CVPR 2019).

Both modules compute their affinity ("energy") matrices and softmax in fp32 even under
autocast: the channel energy A·Aᵀ sums H·W products of activations and overflows fp16, and
the softmax of large energies is sensitive to their rounding. The weighted sum of values
(attention times features: weights in [0, 1], no overflow) runs in the autocast dtype when
autocast is on, like any other matrix product of the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CAM", "PAM", "ATTENTION_VARIANTS"]

# "paper": the equations of the paper; "official": what the authors' code computes.
ATTENTION_VARIANTS = ("paper", "official")
# CAM energy backward: symmetrize the gradient (one C x C x N product) from this N on;
# below, g + g^T (memory bound) costs more than a second product (docs/benchmarks.md).
_SYM_MIN_N = 512


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The low-precision dtype autocast uses on ``device`` now, or None when it is off."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W); a view (no copy) for NCHW *and* channels_last ``x``."""
    B, C, H, W = x.shape
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        # memory is (B, H, W, C): flatten positions there, then a transposed view
        return x.permute(0, 2, 3, 1).reshape(B, H * W, C).transpose(1, 2)
    return x.reshape(B, C, H * W)


def _bmm(p: torch.Tensor, q: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``p @ q`` (B, C, N); for ``channels_last`` computed as ``(qᵀ pᵀ)ᵀ`` so that the result
    has channels_last strides after ``reshape(B, C, H, W)`` (no copies around the product).
    """
    if channels_last:
        return torch.bmm(q.transpose(1, 2), p.transpose(1, 2)).transpose(1, 2)
    return torch.bmm(p, q)


def _is_channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _SymGram(torch.autograd.Function):
    """``a aᵀ`` for ``a`` (B, C, N) with the backward ``(g + gᵀ) a``: one matrix product
    instead of the two autograd runs for ``bmm(a, a.transpose(1, 2))`` (same gradient). The
    transposed add is memory bound (~C² strided reads); for small N two products are cheaper.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(a)
        return torch.bmm(a, a.transpose(1, 2))  # (B, C, C)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (a,) = ctx.saved_tensors
        if a.shape[2] >= _SYM_MIN_N:
            return torch.bmm(g + g.transpose(1, 2), a)  # (B, C, N)
        return torch.baddbmm(torch.bmm(g, a), g.transpose(1, 2), a)  # (B, C, N)


def _check_variant(variant: str) -> str:
    if variant not in ATTENTION_VARIANTS:
        raise ValueError(
            f"attention variant: expected one of {ATTENTION_VARIANTS}, got {variant!r}"
        )
    return variant


class CAM(nn.Module):
    """Channel Attention Module, eq. (1)-(2).

    ``variant="paper"``: x_ij = softmax_j(A_i·A_j) (eq. 1).
    ``variant="official"``: softmax_j(max_k(A_i·A_k) - A_i·A_j), as in DANet and the
    authors' code (it favours *dissimilar* channels; the official checkpoints need it).
    E_i = γ Σ_j x_ij A_j + A_i (eq. 2), γ learnable, initialised to 0. CAM has no other
    parameters.
    """

    def __init__(self, variant: str = "paper") -> None:
        super().__init__()
        self.variant = _check_variant(variant)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        low = _autocast_dtype(x.device)
        cl = _is_channels_last(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            a = _flat(x.float())  # (B, C, N)
            energy = _SymGram.apply(a)  # (B, C, C)
            if self.variant == "official":
                energy = energy.amax(dim=-1, keepdim=True) - energy
            attn = F.softmax(energy, dim=-1)  # (B, C, C), rows sum to 1
            if low is not None:  # sum of values in the autocast dtype (see module docstring)
                out = _bmm(attn.to(low), a.to(low), cl).float()
            else:
                out = _bmm(attn, a, cl)
            out = out.reshape(B, C, H, W)  # (B, C, N) -> (B, C, H, W), x's memory format
            out = self.gamma.float() * out + x.float()
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


class PAM(nn.Module):
    """Position Attention Module (section 3.1.2).

    Query B and key C have ``channels // 8`` channels, value D has ``channels``.
    ``variant="paper"``: B, C, D each from conv1x1 + BN + ReLU (the paper's text).
    ``variant="official"``: plain 1x1 convs with bias (the authors' code, weight-compatible:
    ``query_conv``, ``key_conv``, ``value_conv``).
    S = softmax over positions of Bᵀ·C (N x N, N = H·W); E = γ · D·Sᵀ + A, γ initialised to 0.
    """

    def __init__(self, channels: int, *, variant: str = "paper", qk_reduction: int = 8) -> None:
        super().__init__()
        self.variant = _check_variant(variant)
        qk = max(1, channels // qk_reduction)
        self.query_conv = self._proj(channels, qk)
        self.key_conv = self._proj(channels, qk)
        self.value_conv = self._proj(channels, channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def _proj(self, cin: int, cout: int) -> nn.Module:
        if self.variant == "official":
            return nn.Conv2d(cin, cout, kernel_size=1)
        return nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = self.query_conv(x)  # (B, C', H, W)
        k = self.key_conv(x)  # (B, C', H, W)
        v = self.value_conv(x)  # (B, C, H, W)
        low = _autocast_dtype(x.device)
        cl = _is_channels_last(v)
        with torch.autocast(device_type=x.device.type, enabled=False):
            q = _flat(q.float()).transpose(1, 2)  # (B, N, C')
            k = _flat(k.float())  # (B, C', N)
            energy = torch.bmm(q, k)  # (B, N, N): energy[i, j] = B_i . C_j
            attn = F.softmax(energy, dim=-1)  # (B, N, N), rows sum to 1
            v = _flat(v)  # (B, C, N)
            if low is not None:  # sum of values in the autocast dtype (see module docstring)
                out = _bmm(v.to(low), attn.transpose(1, 2).to(low), cl).float()
            else:
                out = _bmm(v.float(), attn.transpose(1, 2), cl)
            out = out.reshape(B, C, H, W)  # out_i = sum_j attn[i, j] D_j
            out = self.gamma.float() * out + x.float()
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"
