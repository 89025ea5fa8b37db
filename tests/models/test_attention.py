"""CAM / PAM against explicit loop implementations of the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from abdnet.models.attention import CAM, PAM


def _cam_loops(x: torch.Tensor, gamma: float, variant: str) -> torch.Tensor:
    """Eq. (1)-(2) written out element by element (float64)."""
    x = x.double()
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    for b in range(B):
        A = [x[b, i].flatten() for i in range(C)]
        for i in range(C):
            e = [float(A[i] @ A[j]) for j in range(C)]
            if variant == "official":
                m = max(e)
                e = [m - v for v in e]
            top = max(e)
            w = [math.exp(v - top) for v in e]
            z = sum(w)
            acc = sum((w[j] / z) * x[b, j] for j in range(C))
            out[b, i] = gamma * acc + x[b, i]
    return out


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_cam_matches_equations(variant: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4) * 0.5
    cam = CAM(variant)
    with torch.no_grad():
        cam.gamma.fill_(0.7)
    got = cam(x)
    ref = _cam_loops(x, 0.7, variant)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


def test_cam_variants_differ_and_gamma_zero_is_identity() -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 4, 3, 3)
    a, b = CAM("paper"), CAM("official")
    torch.testing.assert_close(a(x), x)  # gamma starts at 0
    with torch.no_grad():
        a.gamma.fill_(1.0)
        b.gamma.fill_(1.0)
    assert (a(x) - b(x)).abs().max() > 1e-3


def test_attention_variant_is_checked() -> None:
    with pytest.raises(ValueError, match="danet"):
        CAM("danet")
    with pytest.raises(ValueError, match="danet"):
        PAM(16, variant="danet")


def _pam_loops(
    x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: float
) -> torch.Tensor:
    """E_i = gamma * sum_j softmax_j(B_i . C_j) D_j + A_i over positions i, j (float64)."""
    x, q, k, v = (t.double() for t in (x, q, k, v))
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    for b in range(B):
        Q = q[b].reshape(q.shape[1], -1)  # (C', N)
        K = k[b].reshape(k.shape[1], -1)
        V = v[b].reshape(C, -1)
        X = x[b].reshape(C, -1)
        Y = torch.empty_like(X)
        N = H * W
        for i in range(N):
            e = torch.stack([Q[:, i] @ K[:, j] for j in range(N)])
            s = torch.exp(e - e.max())
            s = s / s.sum()
            Y[:, i] = gamma * sum(s[j] * V[:, j] for j in range(N)) + X[:, i]
        out[b] = Y.reshape(C, H, W)
    return out


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_pam_matches_equations(variant: str) -> None:
    torch.manual_seed(2)
    pam = PAM(16, variant=variant).eval()
    for m in pam.modules():  # non-trivial BN statistics for the paper variant
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():
        pam.gamma.fill_(-0.4)
    x = torch.randn(2, 16, 3, 2)
    with torch.no_grad():
        q, k, v = pam.query_conv(x), pam.key_conv(x), pam.value_conv(x)
        got = pam(x)
    assert q.shape == (2, 2, 3, 2) and v.shape == (2, 16, 3, 2)  # C/8 query/key channels
    torch.testing.assert_close(got.double(), _pam_loops(x, q, k, v, -0.4), rtol=1e-5, atol=1e-5)


def test_pam_structure() -> None:
    paper = PAM(32, variant="paper")
    official = PAM(32, variant="official")
    assert isinstance(official.query_conv, nn.Conv2d) and official.query_conv.bias is not None
    kinds = [type(m) for m in paper.query_conv]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert paper.gamma.item() == 0.0 and official.gamma.item() == 0.0


def test_cam_energy_in_fp32_for_half_inputs() -> None:
    # A.A^T sums 128 products of size ~900: ~1e5 > fp16 max (65504); fp16 energies overflow.
    torch.manual_seed(3)
    x = (torch.randn(1, 4, 16, 8) * 30).half()
    a = x.reshape(1, 4, -1)
    assert torch.isinf(torch.bmm(a, a.transpose(1, 2))).any()  # the naive half computation fails
    cam = CAM("paper")
    with torch.no_grad():
        cam.gamma.fill_(0.5)
    got = cam(x)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    ref = cam(x.float())
    torch.testing.assert_close(got.float(), ref, rtol=2e-3, atol=0.1)


def test_attention_under_cpu_autocast_matches_fp32() -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 16, 4, 2)
    pam = PAM(16, variant="official")
    cam = CAM("official")
    with torch.no_grad():
        pam.gamma.fill_(0.3)
        cam.gamma.fill_(0.3)
        ref = cam(pam(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = cam(pam(x))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), ref, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("hw", [(3, 4), (32, 16)])  # both backward paths (N < / >= 512)
def test_cam_gradient_matches_autograd_of_the_plain_formula(variant: str, hw) -> None:
    # CAM's energy has a hand-written symmetric backward; autograd through the plain
    # float64 formula softmax(A A^T) A (eq. 1-2) is the reference.
    torch.manual_seed(5)
    H, W = hw
    x = (torch.randn(2, 6, H, W) * (12 / (H * W)) ** 0.5).requires_grad_(True)
    w = torch.randn(2, 6, H, W)
    cam = CAM(variant)
    with torch.no_grad():
        cam.gamma.fill_(0.7)
    (cam(x) * w).sum().backward()
    x64 = x.detach().double().requires_grad_(True)
    a = x64.reshape(2, 6, H * W)
    e = a @ a.transpose(1, 2)
    if variant == "official":
        e = e.amax(dim=-1, keepdim=True) - e
    ref = 0.7 * (torch.softmax(e, dim=-1) @ a).reshape(2, 6, H, W) + x64
    (ref * w.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)


def test_attention_gradients_under_cpu_autocast_match_fp32() -> None:
    # Under bf16 autocast the value sums run in bf16 (energies and softmax stay fp32): the
    # gradients agree with fp32 to bf16 rounding.
    torch.manual_seed(6)
    x = torch.randn(2, 16, 4, 2)
    grads = []
    for autocast in (False, True):
        torch.manual_seed(7)
        pam, cam = PAM(16), CAM("paper")
        with torch.no_grad():
            pam.gamma.fill_(0.3)
            cam.gamma.fill_(0.3)
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = cam(pam(xi))
        y.float().square().sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("autocast", [False, True])
def test_attention_channels_last_equals_nchw(autocast: bool) -> None:
    # channels_last inputs take copy-free views; values, gradients and the output's memory
    # format must match the NCHW computation.
    torch.manual_seed(8)
    x = torch.randn(2, 16, 6, 4)
    torch.manual_seed(9)
    pam, cam = PAM(16), CAM("paper")
    with torch.no_grad():
        pam.gamma.fill_(0.4)
        cam.gamma.fill_(0.6)
    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        xi = x.clone(memory_format=fmt).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = cam(pam(xi))
        y.float().square().sum().backward()
        results.append((y.float(), xi.grad, y.is_contiguous(memory_format=fmt)))
    (y0, g0, fmt0), (y1, g1, fmt1) = results
    assert fmt0 and fmt1
    tol = 2e-2 if autocast else 1e-5
    torch.testing.assert_close(y1, y0, rtol=tol, atol=tol)
    torch.testing.assert_close(g1, g0, rtol=tol, atol=tol)
