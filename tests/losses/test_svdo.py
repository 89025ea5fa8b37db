"""SVDO (eqs. 4-5): power-iteration eigenvalues against torch.linalg.eigvalsh and a closed form."""

from __future__ import annotations

import pytest
import torch

from abdnet.losses import (
    gram_extreme_eigs,
    of_penalty,
    ow_penalty,
    power_iteration_eigs,
    svdo_penalty,
)


def _spd_with_spectrum(eigs: torch.Tensor, seed: int) -> torch.Tensor:
    """Q diag(eigs) Q^T with a random orthogonal Q, float64."""
    g = torch.Generator().manual_seed(seed)
    n = eigs.shape[-1]
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(eigs.double()) @ q.T


def _gapped_batch() -> torch.Tensor:
    # Spectra with clear gaps at both ends: lambda_1 / lambda_2 = 2 and a lonely smallest.
    spectra = [
        torch.cat([torch.tensor([10.0]), torch.linspace(5.0, 1.0, 14), torch.tensor([0.2])]),
        torch.cat([torch.tensor([300.0]), torch.linspace(150.0, 40.0, 14), torch.tensor([3.0])]),
        torch.cat([torch.tensor([1.0]), torch.linspace(0.5, 0.2, 14), torch.tensor([0.01])]),
    ]
    return torch.stack([_spd_with_spectrum(s, i) for i, s in enumerate(spectra)])


def test_many_iterations_match_eigvalsh():
    X = _gapped_batch()  # (3, 16, 16) float64
    ref = torch.linalg.eigvalsh(X)  # ascending
    torch.manual_seed(0)
    est = power_iteration_eigs(X.float(), iters=60)
    assert est.lam_max.dtype == torch.float32
    torch.testing.assert_close(est.lam_max.double(), ref[:, -1], rtol=1e-4, atol=0)
    torch.testing.assert_close(est.lam_min.double(), ref[:, 0], rtol=1e-4, atol=0)


def test_leading_batch_dims_are_kept():
    X = _gapped_batch().float()
    est = power_iteration_eigs(torch.stack([X, X]), iters=60)  # (2, 3, n, n)
    assert est.lam_max.shape == (2, 3) and est.lam_min.shape == (2, 3)
    ref = torch.linalg.eigvalsh(X.double())
    torch.testing.assert_close(est.lam_max[1].double(), ref[:, -1], rtol=1e-4, atol=0)


def _eq5_closed_form(
    lam: torch.Tensor, V: torch.Tensor, q0: torch.Tensor, iters: int
) -> torch.Tensor:
    """|lambda| from `iters` steps of eq. (5) written in the eigenbasis of X = V diag(lam) V^T.

    After k steps p = X^(2k-1) q0 and q = X^(2k) q0, so with c = V^T q0:
    ||q|| / ||p|| = sqrt(sum c^2 lam^(4k) / sum c^2 lam^(4k-2)).
    """
    c2 = (V.transpose(-1, -2) @ q0.double()).squeeze(-1) ** 2  # (B, n)
    m = 4 * iters
    return ((c2 * lam.abs() ** m).sum(-1) / (c2 * lam.abs() ** (m - 2)).sum(-1)).sqrt()


@pytest.mark.parametrize("iters", [1, 2, 3])
def test_two_iterations_equal_the_closed_form(iters):
    # Random Wishart-type Grams (a flat spectrum: the hard case for few iterations).
    g = torch.Generator().manual_seed(1)
    F = torch.randn(8, 12, 40, generator=g)
    X = F @ F.transpose(1, 2)  # (8, 12, 12)
    lam, V = torch.linalg.eigh(X.double())

    torch.manual_seed(123)
    est = power_iteration_eigs(X, iters=iters)
    # The same draws the implementation makes: one start vector per eigenvalue search.
    torch.manual_seed(123)
    q_max = torch.rand(8, 12, 1)
    q_min = torch.rand(8, 12, 1)

    lam_max = _eq5_closed_form(lam, V, q_max, iters)
    torch.testing.assert_close(est.lam_max.double(), lam_max, rtol=1e-5, atol=0)
    # lambda_min: eq. (5) on X - lambda_1_hat I, eigenvalues lam - lambda_1_hat.
    spread = _eq5_closed_form(lam - est.lam_max.double().unsqueeze(1), V, q_min, iters)
    torch.testing.assert_close(
        est.lam_min.double(), est.lam_max.double() - spread, rtol=1e-4, atol=1e-4
    )


def _relative_errors(F: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    ref = torch.linalg.eigvalsh(F.double() @ F.double().transpose(1, 2))
    est = gram_extreme_eigs(F, iters)
    err_max = (est.lam_max.double() - ref[:, -1]) / ref[:, -1]
    spread = ref[:, -1] - ref[:, 0]
    err_spread = ((est.lam_max - est.lam_min).double() - spread) / spread
    return err_max, err_spread


def test_two_iterations_documented_bound():
    """The bound in the svdo module docstring, on 400 random matrices of two kinds.

    Always (theory): lambda_1_hat <= lambda_1 and 0 <= estimated spread <= true spread.
    Measured: post-ReLU feature Grams (dominant mean direction) give lambda_1 to < 1e-3 and
    the spread within 10%; flat Wishart spectra (random weights) under-estimate the spread by
    5-50%.
    """
    torch.manual_seed(7)
    relu = torch.relu(torch.randn(200, 32, 128))
    gauss = torch.randn(200, 32, 128)
    for F in (relu, gauss):
        err_max, err_spread = _relative_errors(F, iters=2)
        assert (err_max <= 1e-5).all()
        assert (err_spread <= 1e-5).all() and (err_spread >= -1.0).all()
    err_max, err_spread = _relative_errors(relu, iters=2)
    assert err_max.abs().max() < 1e-3
    assert err_spread.min() > -0.10
    err_max, err_spread = _relative_errors(gauss, iters=2)
    assert -0.5 < err_spread.min() and err_spread.max() < -0.05


def test_rank_deficient_gram_has_exact_zero_min():
    # C > N: F F^T (C x C) has rank N < C.
    torch.manual_seed(0)
    F = torch.randn(3, 20, 6)
    ref = torch.linalg.eigvalsh(F.double() @ F.double().transpose(1, 2))
    assert ref[:, 0].abs().max() < 1e-10  # the reference agrees: lambda_min = 0
    est = gram_extreme_eigs(F, iters=80)
    assert (est.lam_min == 0).all()
    torch.testing.assert_close(est.lam_max.double(), ref[:, -1], rtol=1e-4, atol=0)


def test_full_rank_gram_uses_f_ft():
    # C <= N: F = U diag(s) V^T with gapped singular values, so F F^T has eigenvalues s^2.
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(30, 5, generator=g, dtype=torch.float64))
    s = torch.tensor([4.0, 2.0, 1.8, 1.5, 0.5], dtype=torch.float64)
    F = (U @ torch.diag(s) @ V.T).float().unsqueeze(0)  # (1, 5, 30)
    est = gram_extreme_eigs(F, iters=60)
    torch.testing.assert_close(est.lam_max.double(), s[:1] ** 2, rtol=1e-4, atol=0)
    torch.testing.assert_close(est.lam_min.double(), s[-1:] ** 2, rtol=1e-4, atol=0)


def test_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    F = torch.relu(torch.randn(4, 16, 64)) + 0.1 * torch.randn(4, 16, 64)
    torch.manual_seed(5)
    ref = gram_extreme_eigs(F, iters=2)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gram_extreme_eigs(F, iters=2)
        got_bf16_in = gram_extreme_eigs(F.bfloat16(), iters=2)
        pen = svdo_penalty(F, iters=2)
    assert got.lam_max.dtype == torch.float32 and got.lam_min.dtype == torch.float32
    assert pen.dtype == torch.float32
    # bf16 matrix products would be off by ~1e-2; fp32 agrees to rounding.
    torch.testing.assert_close(got.lam_max, ref.lam_max, rtol=1e-6, atol=0)
    torch.testing.assert_close(got.lam_min, ref.lam_min, rtol=1e-5, atol=1e-3)
    assert got_bf16_in.lam_max.dtype == torch.float32


def test_reproducible_from_rng_state():
    F = torch.randn(3, 8, 20)
    torch.manual_seed(11)
    a = svdo_penalty(F)
    torch.manual_seed(11)
    b = svdo_penalty(F)
    c = svdo_penalty(F)  # new start vectors: a slightly different 2-step estimate
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_svdo_penalty_zero_for_orthonormal_and_positive_otherwise():
    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(40, 8))
    F_orth = Q.T.contiguous().unsqueeze(0)  # (1, 8, 40) orthonormal rows: F F^T = I
    assert svdo_penalty(F_orth).abs().item() < 1e-8
    F = torch.randn(1, 8, 40)
    assert svdo_penalty(F).item() > 1.0


def test_svdo_penalty_is_eq4_with_exact_eigenvalues_after_many_iterations():
    torch.manual_seed(0)
    F = torch.rand(2, 6, 50) + 2 * torch.eye(6, 50)
    ref = torch.linalg.eigvalsh(F.double() @ F.double().transpose(1, 2))
    expected = 0.5 * (ref[:, -1] - ref[:, 0]) ** 2
    got = svdo_penalty(F, iters=300, beta=0.5)
    torch.testing.assert_close(got.double(), expected, rtol=1e-3, atol=0)


def test_gradient_matches_exact_eigenvalue_gradient():
    # At convergence d lambda / dX = v v^T; the autograd through the iterations must agree.
    X = _gapped_batch()[0].float().requires_grad_(True)
    torch.manual_seed(0)
    est = power_iteration_eigs(X, iters=60)
    (est.lam_max - est.lam_min).backward()
    _, V = torch.linalg.eigh(X.detach().double())
    v1, vn = V[:, -1:], V[:, :1]
    expected = v1 @ v1.T - vn @ vn.T
    grad = X.grad.double()
    grad = (grad + grad.T) / 2  # only the symmetric part is defined for symmetric X
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-3)


def test_zero_matrix_gives_zero_not_nan():
    F = torch.zeros(2, 4, 10, requires_grad=True)
    pen = svdo_penalty(F)
    pen.sum().backward()
    assert torch.equal(pen, torch.zeros(2))
    assert torch.isfinite(F.grad).all()


def test_of_penalty_forms():
    torch.manual_seed(0)
    maps = torch.relu(torch.randn(4, 8, 3, 5))  # (B, C, H, W), C <= N
    F = maps.reshape(4, 8, 15)
    ref = torch.linalg.eigvalsh(F.double() @ F.double().transpose(1, 2))
    diff = ref[:, -1] - ref[:, 0]
    iters = 300
    paper_raw = of_penalty([("m", maps, 0.5)], iters=iters, form="paper", gram_norm="none")
    torch.testing.assert_close(paper_raw.double(), 0.5 * (diff**2).mean(), rtol=1e-3, atol=0)
    paper_n = of_penalty([("m", maps, 1.0)], iters=iters, form="paper", gram_norm="spatial")
    torch.testing.assert_close(paper_n.double(), ((diff / 15) ** 2).mean(), rtol=1e-3, atol=0)
    # The authors' one-step estimates are Rayleigh quotients: inside [lambda_min, lambda_1],
    # so their spread is at most the exact one (values: tests/losses/test_svdo_official.py).
    official = of_penalty([("m", maps, 0.01)], iters=iters, form="official")
    assert 0 < official.double() <= 0.01 * diff.sum() / (4 / 32) * (1 + 1e-5)
    two = of_penalty([("a", maps, 1.0), ("b", maps, 2.0)], iters=iters, gram_norm="none")
    torch.testing.assert_close(
        two, 3.0 * of_penalty([("m", maps, 1.0)], iters=iters, gram_norm="none"), rtol=1e-3, atol=0
    )


def test_of_penalty_zero_for_orthonormal_maps_and_positive_otherwise():
    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(12, 4))  # (N=12, C=4)
    fmap = Q.T.reshape(1, 4, 3, 4).repeat(2, 1, 1, 1)  # every sample: F F^T = I
    for form in ("paper", "official"):
        # Zero up to fp32 rounding of lambda = 1 (official: un-squared, times 32 / B * B).
        assert of_penalty([("x", fmap, 1.0)], form=form).abs().item() < 1e-4
        assert of_penalty([("x", torch.rand(2, 4, 3, 4), 1.0)], form=form).item() > 1e-3


def test_ow_penalty_sums_layers_and_official_scale():
    torch.manual_seed(0)
    ws = [
        torch.randn(8, 3, 3, 3),
        torch.randn(8, 3, 3, 3),
        torch.randn(16, 8, 1, 1),
        torch.randn(5, 7),
    ]
    iters = 400
    expected = 0.0
    for w in ws:
        Wm = w.reshape(w.shape[0], -1).T.double()  # (in*k*k, out): the paper's layout
        ev = torch.linalg.eigvalsh(Wm.T @ Wm)  # W^T W (out x out)
        expected += float(ev[-1] - ev[0]) ** 2
    got = ow_penalty(ws, iters=iters)
    assert abs(got.item() - expected) / expected < 1e-3
    got_off = ow_penalty(ws, iters=iters, form="official")  # one-step estimates: a lower bound
    assert 0 < got_off.item() <= 10 * expected * (1 + 1e-5)


def test_ow_penalty_zero_for_orthonormal_filters_positive_otherwise():
    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(27, 8))  # (in*k*k, out) with orthonormal columns
    w = Q.T.reshape(8, 3, 3, 3)
    assert ow_penalty([w]).abs().item() < 1e-8
    assert ow_penalty([torch.randn(8, 3, 3, 3)]).item() > 1.0


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="power_iters"):
        power_iteration_eigs(torch.eye(3), iters=0)
    with pytest.raises(ValueError, match="svdo_form"):
        of_penalty([("x", torch.rand(1, 2, 2, 2), 1.0)], form="paper2")
    with pytest.raises(ValueError, match="of_gram_norm"):
        of_penalty([("x", torch.rand(1, 2, 2, 2), 1.0)], gram_norm="n")
    with pytest.raises(ValueError, match="of_maps\\['x'\\]"):
        of_penalty([("x", torch.rand(2, 2, 2), 1.0)])
    with pytest.raises(ValueError, match="ow_weights\\[1\\]"):
        ow_penalty([torch.rand(2, 2), torch.rand(3)])


def _plain_gram_eigs_f64(F: torch.Tensor, q0s: list[torch.Tensor], iters: int):
    """Eq. (5) written out in float64 with autograd through the explicit Gram (reference)."""

    def iterate(matvec, q):
        lam = None
        for _ in range(iters):
            q = q / q.norm(dim=(1, 2), keepdim=True).detach()
            p = matvec(q)
            q = matvec(p)
            lam = q.norm(dim=(1, 2)) / p.norm(dim=(1, 2))
        return lam

    r, c = F.shape[-2:]
    G = F @ F.transpose(1, 2) if r <= c else F.transpose(1, 2) @ F
    lam_max = iterate(lambda v: G @ v, q0s[0].double())
    if r > c:
        return lam_max, torch.zeros_like(lam_max)
    shift = lam_max.view(-1, 1, 1)
    return lam_max, lam_max - iterate(lambda v: G @ v - shift * v, q0s[1].double())


@pytest.mark.parametrize("shape", [(3, 12, 40), (3, 40, 12)])  # F F^T full rank / deficient
@pytest.mark.parametrize("iters", [1, 2, 3])
def test_low_rank_backward_equals_autograd_through_the_gram(shape, iters):
    # gram_extreme_eigs has a hand-written (low-rank) backward; autograd through the plain
    # float64 iterations on the explicit Gram, with the same start vectors, is the reference.
    torch.manual_seed(0)
    F = (torch.randn(*shape) + 0.3).requires_grad_(True)
    n = min(shape[1:])
    torch.manual_seed(7)
    q0s = [torch.rand(shape[0], n, 1) for _ in range(1 if shape[1] > shape[2] else 2)]
    torch.manual_seed(7)
    est = gram_extreme_eigs(F, iters=iters)
    w_max, w_min = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, 1.5, -1.0])
    ((est.lam_max * w_max).sum() + (est.lam_min * w_min).sum()).backward()
    F64 = F.detach().double().requires_grad_(True)
    lam_max, lam_min = _plain_gram_eigs_f64(F64, q0s, iters)
    ((lam_max * w_max).sum() + (lam_min * w_min).sum()).backward()
    torch.testing.assert_close(est.lam_max.double(), lam_max.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(est.lam_min.double(), lam_min.detach(), rtol=1e-4, atol=1e-4)
    scale = F64.grad.abs().max()
    torch.testing.assert_close(F.grad.double(), F64.grad, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("form", ["paper", "official"])
@pytest.mark.parametrize("which", ["of", "ow"])
def test_channels_last_inputs_give_the_same_penalty_and_gradient(which, form):
    # channels_last maps/weights are read through copy-free views (for weights with permuted
    # columns, which leaves W^T W unchanged); the NCHW computation is the reference.
    torch.manual_seed(0)
    if which == "of":
        bases = [torch.relu(torch.randn(2, 4, 5, 6)), torch.relu(torch.randn(2, 40, 3, 2))]
    else:  # 3x3 convs (out < in*k*k), a 1x1 expansion (out > in) and a stem-like conv
        bases = [torch.randn(8, 4, 3, 3), torch.randn(8, 4, 3, 3), torch.randn(16, 4, 1, 1)]
        bases.append(torch.randn(6, 3, 7, 7))
    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        ts = [b.clone(memory_format=fmt).requires_grad_(True) for b in bases]
        torch.manual_seed(3)
        if which == "of":
            pen = of_penalty([(str(i), t, 1.0) for i, t in enumerate(ts)], form=form)
        else:
            pen = ow_penalty(ts, form=form)
        pen.backward()
        results.append((pen, [t.grad for t in ts]))
    (p0, g0), (p1, g1) = results
    torch.testing.assert_close(p1, p0, rtol=1e-5, atol=0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * b.abs().max().item())
