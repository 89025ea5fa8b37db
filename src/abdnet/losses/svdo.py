"""SVDO: spectral value difference orthogonality (section 3.2, eqs. 4-5 of the paper).

Eq. (4) penalizes ``beta * (lambda_1(F F^T) - lambda_min(F F^T))^2`` for a matrix ``F``; the
two extreme eigenvalues come from the power iteration of eq. (5) (no SVD/EVD):

    p <- X q,   q <- X p,   lambda(X) <- ||q|| / ||p||          (two times by default)

with ``X = F F^T`` for lambda_1 and ``X = F F^T - lambda_1 I`` for lambda_min: the dominant
eigenvalue of the shifted matrix is ``lambda_min - lambda_1 <= 0``, whose magnitude eq. (5)
estimates, so ``lambda_min = lambda_1 - |that|`` and the difference of eq. (4) is just that
magnitude.

Which Gram. The paper reshapes a feature map ``M`` (C, H, W) into ``F`` (C, N), N = H*W, and
uses ``F F^T`` (C x C, channel correlations); a conv weight (out, in, k, k) becomes
``W`` (in*k*k, out) and its Gram is ``W^T W`` (out x out). When ``F`` has more rows than
columns (C > N, e.g. the 1024 x (24*8) maps after the attentive reduction; or a 1x1 conv
that expands channels) the C x C Gram has rank <= N, so ``lambda_min = 0`` *exactly*. We
then use that exact value and run eq. (5) for lambda_1 on the N x N Gram ``F^T F``, which
has the same non-zero eigenvalues and is smaller (cheaper to build and iterate). Otherwise
both eigenvalues come from eq. (5) on ``F F^T``. (A matrix-free ``F (F^T q)`` iteration was
tried: it does fewer flops but is memory bound and was 3-5x slower on CPU than building the
smaller Gram with one batched matrix product.)

Gradients. The paper obtains the gradient by auto-differentiation through the iterations,
and so do we: every matrix-vector product and the shift ``lambda_1 I`` are differentiated.
The random start vector is a constant (no gradient). Each iteration rescales ``q`` to unit
norm to avoid over/underflow over many iterations; the scale factor is detached because
``||X p|| / ||p||`` is invariant to the scale of ``p``, so this gives exactly the gradient of
the un-normalized iteration of eq. (5) and no gradient through a norm of a possibly zero
vector. A zero matrix gives lambda = 0 (not 0/0).

Start vectors are uniform in [0, 1) (``torch.rand``, as the authors' weight regularizer
draws them) on the input's device from torch's default generator of that device, so a
restored RNG state reproduces a run. A positive start vector matters for O.F.: the Gram of
non-negative (post-ReLU) features has a non-negative top eigenvector, so the start vector
always overlaps it well; a Gaussian start was measured to miss lambda_1 by up to 87% after
2 iterations on such Grams (uniform: < 1e-3), with no difference on signed matrices.
Everything runs in float32 with autocast disabled, whatever the caller's precision: two
fp16/bf16 matrix products would lose the eigenvalue difference of nearly-orthogonal matrices.

Accuracy of 2 iterations (tests/losses/test_svdo.py checks all of this). For a PSD ``X``
the estimate of eq. (5) is ``sqrt(sum c_i^2 l_i^8 / sum c_i^2 l_i^6)`` (``c = V^T q0``), a
weighted power mean of the eigenvalues, so ``lambda_min <= lambda_1_hat <= lambda_1`` and the
estimated difference lies in ``[0, lambda_1 - lambda_min]``: SVDO with few iterations
under-estimates the spread, it never over-estimates it. How much depends on the spectrum
(measured on 200 random 32 x 128 matrices each):
- post-ReLU feature Grams (a dominant mean direction, as for O.F.): lambda_1 relative error
  below 1e-3, the spread -2% to -6%;
- flat Wishart spectra (Gaussian matrices, like conv weights at init, as for O.W.): lambda_1
  -14% in the median (worst -31%), the spread -10% to -47% (median -26%).
On the maps of a ResNet-50 (``benchmarks/svdo_magnitude.py resnet``) lambda_1 is within 1e-5
of ``eigvalsh``.

The authors' estimator (``form="official"``). Their code does not run eq. (5): each call
draws a fresh start ``x0`` and takes **one** matrix-vector product followed by a Rayleigh
quotient, ``x1 = A x0``, ``lambda_1 ~ x1^T A x1 / x1^T x1``; the smallest eigenvalue is that
same estimate on ``A - lambda_1 I`` (from a second fresh start ``z0``) plus ``lambda_1``, which
equals the Rayleigh quotient of ``A`` at ``y1 = (A - lambda_1 I) z0``. Gradients flow through
both estimates, the shift included. The Gram is always the one their code builds: ``F F^T``
(C x C) of the (C, H*W) map for O.F., ``W^T W`` (out x out) for O.W., even when it is rank
deficient; O.F. starts are standard normal, O.W. starts uniform in [0, 1). ``official_extreme_eigs``
computes exactly that estimator matrix-free (``A v = F (F^T v)``: four products with one or
two columns, not the C x C Gram). On post-ReLU maps the one-step estimate is poor when ``x0``
barely overlaps the top eigenvector (its overlap is N(0, 1)), and its gradient is then large:
per sample the gradient norm is heavy-tailed, about 3.4x the exact eigenvalue gradient in the
median and up to a few hundred times in the tail on 1024 x 24*8 maps (the expected gradient
is close to the exact one; the rest is noise, see below). ``tests/losses/test_svdo_official.py``
checks values and gradients against a loop-by-loop transcription of their formulas.

Their expected gradient. A normal start is isotropic, so ``c = V^T x0`` (``A = V diag(l) V^T``)
is standard normal whatever ``V``, and so is ``V^T z0``: the expected penalty
``phi(l) = E[lambda_1_hat - lambda_min_hat]`` depends on the eigenvalues ``l`` only. The start
does not depend on ``F``, so the expected gradient is the gradient of ``phi``, that of a
spectral function: ``V diag(phi') V^T`` w.r.t. ``A``, ``2 V diag(phi') V^T F`` w.r.t. ``F``,
of norm ``2 sqrt(sum_i phi'_i^2 l_i)``; the exact lambda_1's is ``2 v_1 v_1^T F``, of norm
``2 sqrt(l_1)``. Their ratio ``kappa = sqrt(sum_i phi'_i^2 l_i / l_1)`` is of degree 0 in the
activations. With a dominant ``l_1`` (post-ReLU maps) and ``w = c_1^2 l_1^2 / sum_i c_i^2 l_i^2``
(the weight of the top eigenvector in ``x1``), ``lambda_1_hat = sum c_i^2 l_i^3 / sum c_i^2 l_i^2``
gives ``d lambda_1_hat / d l_1 = w (3 - 2 w) - 2 w (1 - w) S_3 / (S_2 l_1)``
(``S_k = sum_{i>1} c_i^2 l_i^k``; the last term is of order l_2 / l_1), so
``phi'_1 ~ E[w (3 - 2 w)]`` (at most 9/8 per start); ``lambda_min_hat`` is about the mean
eigenvalue ``tr(A) / C``, whose gradient is below 1e-2 of lambda_1's. ``kappa`` depends on the
spectrum through ``r = l_1^2 / sum_{i>1} l_i^2`` (how often ``w`` is small): measured
(``benchmarks/svdo_magnitude.py``, 2000 starts per sample) 0.96-0.98 at r = 20-36 (random
post-ReLU 1024 x 24*8 and 1024 x 12*8 maps, and the 1024 x 24*8 map after the attentive
reduction of a ResNet-50 at init), 0.99 at r ~ 80 (its res_conv_2 map), 0.76-0.86 at r = 4-6
(post-ReLU maps of 16-32 positions). The mean of the official form's gradient over 2000
starts agrees (0.978 +- 0.006 along the exact gradient of a 1024 x 24*8 map whose
``phi'_1`` is 0.969). The per-start noise around it is
~50x the expected gradient in r.m.s. on those maps, so the norm of a mean over k starts is
``sqrt(|E g|^2 + noise^2 / k)``: ~5x ``|E g|`` at k = 100, a statistic of k, not of their code.

Random draws (a restored RNG state reproduces a run; all from torch's default generator of
the input's device, float32):
- paper form, O.F.: per map, ``rand(B, n, 1)`` for lambda_1 and, when ``F F^T`` has full rank
  (C <= H*W), ``rand(B, n, 1)`` for the shifted iteration, n = min(C, H*W);
- paper form, O.W.: the same per group of equally shaped weights (first-seen order);
- official form, O.F.: per map, ``randn(B, C, 1)`` then ``randn(B, C, 1)``;
- official form, O.W.: per layer in the given order, ``rand(out, 1)`` then ``rand(out, 1)``;
  layers with a single filter are skipped (their penalty is 0 in the authors' code) and draw
  nothing.

Magnitude and the paper form's normalization (``gram_norm``). On post-ReLU maps lambda_1 is
dominated by the non-zero mean of the activations (~ C * N * mean^2): on the 1024 x 24*8
maps after the attentive reduction at 384x128 it is ~3e4 at unit activation scale. Eq. (4)
squared on that raw Gram (``gram_norm="none"``) is 1e2-1e5x the cross-entropy at
beta_OF = 1e-6, and its gradient, ``2 beta (lambda_1 - lambda_min) grad(lambda_1 - lambda_min)``,
is of degree 3 in the activations where the authors' un-squared penalty's is of degree 1: no
fixed beta can match theirs at more than one activation scale (the spatial normalization
``F F^T / N`` of ``gram_norm="spatial"`` changes the constant, not the degree). The default
``gram_norm="relative"`` applies eq. (4) to ``F F^T / sqrt(lambda_1)``, i.e. per matrix

    (lambda_1 - lambda_min)^2 / lambda_1 = lambda_1 * (1 - lambda_min / lambda_1)^2:

the square of the dimensionless relative spread (``1 - 1/kappa^2`` for the condition number
kappa of eq. 3) times lambda_1. It is of degree 2 like the authors' penalty, so the ratio of
the two gradients does not depend on the activation scale; it is 0 exactly when ``F F^T`` is
a multiple of the identity, and for a rank-deficient Gram (lambda_min = 0) it is lambda_1,
whose gradient is that of the authors' penalty without its estimator noise. Its batch
reduction is the mean, and ``scale`` (config ``loss.of_paper_scale``) calibrates it against
the authors' O.F. in the quantity SGD applies, the expected gradient: their sum / (B/32) is
32x a mean, and their expected gradient is ``kappa`` = 0.97 times the exact lambda_1 gradient
(above), so the default 31 = 32 x 0.97 gives the authors' expected gradient within 1% on the
1024 x 24*8 maps (``kappa`` 0.96-0.98) at any activation scale, both being of degree 2. Other
statistics of their heavy-tailed gradient give other numbers (the per-sample median is 3.4x
the exact gradient, the norm of a 100-start mean ~5x): they measure the noise, not the drift
(``benchmarks/svdo_magnitude.py of`` prints them side by side; docs/benchmarks.md "O.F.
strength"). The scale multiplies every ``gram_norm`` of the paper form.

One concept in one file (over 450 lines): SVDO, eqs. 4-5, with its power iteration and the
O.F. / O.W. terms built on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, get_args

import torch
from torch import Tensor

from abdnet.config import GramNorm, SVDOForm

__all__ = [
    "ExtremeEigs",
    "power_iteration",
    "power_iteration_eigs",
    "gram_extreme_eigs",
    "official_extreme_eigs",
    "svdo_penalty",
    "of_penalty",
    "ow_penalty",
    "SVDO_FORMS",
    "GRAM_NORMS",
]

SVDO_FORMS: tuple[str, ...] = get_args(SVDOForm)
GRAM_NORMS: tuple[str, ...] = get_args(GramNorm)
OFFICIAL_STARTS = ("normal", "uniform")

# Below this a norm is treated as zero (the vector is the zero vector).
_TINY = 1e-30
# The authors' code normalizes the O.F. batch sum to a 32-image batch.
_OFFICIAL_OF_BATCH = 32.0
# The authors' code multiplies the O.W. penalty by 10 on top of beta_OW.
_OFFICIAL_OW_SCALE = 10.0


class ExtremeEigs(NamedTuple):
    """Largest and smallest eigenvalue estimates, each of shape (batch...,)."""

    lam_max: Tensor
    lam_min: Tensor


def _check_iters(iters: int) -> None:
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"power_iters: expected an integer >= 1, got {iters!r}")


def power_iteration(matvec: Callable[[Tensor], Tensor], q0: Tensor, iters: int = 2) -> Tensor:
    """|dominant eigenvalue| of a symmetric operator by eq. (5): ``||X X q|| / ||X q||``.

    ``matvec`` maps ``(B, n, 1)`` to ``(B, n, 1)``; ``q0`` ``(B, n, 1)`` is the start vector.
    Returns ``(B,)``. Differentiable through ``matvec``; see the module docstring.
    """
    _check_iters(iters)
    q = q0
    lam = q0.new_zeros(q0.shape[0])
    for _ in range(iters):
        # Scale-only step: lambda below is invariant to it, so detaching loses no gradient.
        q = q / torch.linalg.vector_norm(q, dim=(1, 2), keepdim=True).detach().clamp_min(_TINY)
        p = matvec(q)  # (B, n, 1)
        q = matvec(p)  # (B, n, 1)
        p_norm = torch.linalg.vector_norm(p, dim=(1, 2))  # (B,)
        lam = torch.linalg.vector_norm(q, dim=(1, 2)) / p_norm.clamp_min(_TINY)
    return lam


def _fp32_no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def power_iteration_eigs(X: Tensor, iters: int = 2) -> ExtremeEigs:
    """Extreme eigenvalues of symmetric PSD matrices ``X`` (..., n, n) by eq. (5).

    lambda_1 from the iteration on ``X``; lambda_min = lambda_1 - |dominant eigenvalue of
    X - lambda_1 I| (the paper's shift). Computed in float32 with autocast off.
    """
    if X.dim() < 2 or X.shape[-1] != X.shape[-2]:
        raise ValueError(
            f"power_iteration_eigs: expected square matrices (..., n, n), got {tuple(X.shape)}"
        )
    batch_shape, n = X.shape[:-2], X.shape[-1]
    with _fp32_no_autocast(X.device):
        Xf = X.float().reshape(-1, n, n)  # (B, n, n)
        B = Xf.shape[0]
        lam_max = _power_iteration_max(Xf, iters)  # (B,)
        shift = lam_max.view(B, 1, 1)
        q0 = torch.rand(B, n, 1, device=X.device, dtype=torch.float32)
        spread = power_iteration(lambda v: Xf @ v - shift * v, q0, iters)  # (B,)
        lam_min = lam_max - spread
    return ExtremeEigs(lam_max.reshape(batch_shape), lam_min.reshape(batch_shape))


def _power_iteration_max(X: Tensor, iters: int) -> Tensor:
    """lambda_1 of PSD ``X`` (..., n, n), float32, autocast already off -> (...,)."""
    batch_shape, n = X.shape[:-2], X.shape[-1]
    Xf = X.reshape(-1, n, n)  # (B, n, n)
    q0 = torch.rand(Xf.shape[0], n, 1, device=X.device, dtype=torch.float32)
    return power_iteration(lambda v: Xf @ v, q0, iters).reshape(batch_shape)


def _gram_iterations(
    G: Tensor, q0s: Sequence[Tensor], iters: int, taps: list[Tensor] | None, vs: list[Tensor]
) -> tuple[Tensor, Tensor | None]:
    """Eq. (5) on the Gram ``G`` (B, n, n): lambda_1 from ``q0s[0]`` and, if ``len(q0s) == 2``,
    the spread ``lambda_1 - lambda_min`` from the shifted iteration started at ``q0s[1]``.

    Every product ``G @ v`` is recorded: its input ``v`` is appended to ``vs`` (detached) and
    ``taps[i]`` (a zero (B, n, 1) tensor, or nothing when ``taps`` is None) is added to the
    i-th product, so that the gradient w.r.t. ``taps[i]`` is the adjoint of ``G @ v_i``.
    """

    def matvec(v: Tensor, shift: Tensor | None = None) -> Tensor:
        i = len(vs)
        vs.append(v.detach())
        # G is symmetric: G v = (v^T G)^T. The row-vector form runs as a fast GEMV on CPU;
        # bmm with a (B, n, 1) right operand takes a slow path (10x on 512 x 512).
        y = (v.transpose(-1, -2) @ G).transpose(-1, -2)  # (B, n, 1)
        if taps is not None:
            y = y + taps[i]
        return y if shift is None else y - shift * v

    lam_max = power_iteration(matvec, q0s[0], iters)  # (B,)
    if len(q0s) == 1:
        return lam_max, None
    shift = lam_max.view(-1, 1, 1)
    return lam_max, power_iteration(lambda v: matvec(v, shift), q0s[1], iters)


# Grams at least this large are built from three half-size blocks (see _sym_gram).
_BLOCK_GRAM_MIN_N = 256


def _sym_gram(A: Tensor) -> Tensor:
    """``A A^T`` (B, n, n) for ``A`` (B, n, m), exactly symmetric.

    For n >= ``_BLOCK_GRAM_MIN_N`` the rows are split in halves ``A1``, ``A2`` and only the
    blocks ``A1 A1^T``, ``A1 A2^T``, ``A2 A2^T`` are multiplied (the fourth is a transpose):
    3/4 of the flops of one full product (torch has no symmetric rank-k update).
    """
    n = A.shape[-2]
    if n < _BLOCK_GRAM_MIN_N:
        return A @ A.transpose(-1, -2)
    h = n // 2
    A1, A2 = A[..., :h, :], A[..., h:, :]  # (B, h, m), (B, n - h, m)
    G12 = A1 @ A2.transpose(-1, -2)  # (B, h, n - h)
    top = torch.cat([A1 @ A1.transpose(-1, -2), G12], -1)  # (B, h, n)
    bottom = torch.cat([G12.transpose(-1, -2), A2 @ A2.transpose(-1, -2)], -1)  # (B, n - h, n)
    return torch.cat([top, bottom], -2)  # (B, n, n)


class _GramEigs(torch.autograd.Function):
    """lambda_1 and the spread of eq. (5) on the Gram of ``A`` (B, r, c) with a low-rank
    backward.

    Forward: ``G = A A^T`` (``gram_of_rows``) or ``A^T A``, then the iterations on ``G``.
    The loss depends on ``G`` only through the 2*iters (4*iters with the spread) products
    ``G v_i``, so ``dL/dG = sum_i g_i v_i^T = U V^T`` (``g_i``: adjoint of ``G v_i``, found by
    re-running the cheap n x n iterations with autograd; ``V``: the ``v_i``) -- rank <= 8
    for 2 iterations. Hence ``dL/dA = (U V^T + V U^T) A`` for ``G = A A^T`` (and
    ``A (U V^T + V U^T)`` for ``A^T A``): two skinny products instead of the two n x n x m
    products autograd would run through ``A @ A^T``. Same gradient as autograd through the
    iterations (up to float rounding): tests/losses/test_svdo.py checks it.
    """

    @staticmethod
    def forward(ctx, A: Tensor, q0s: list[Tensor], iters: int, gram_of_rows: bool):  # type: ignore[override]
        G = _sym_gram(A if gram_of_rows else A.transpose(-1, -2))  # (B, n, n)
        lam_max, spread = _gram_iterations(G, q0s, iters, None, [])
        ctx.save_for_backward(A, G, *q0s)
        ctx.iters, ctx.gram_of_rows = iters, gram_of_rows
        ctx.has_spread = spread is not None
        return lam_max, (spread if spread is not None else torch.zeros_like(lam_max))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_max: Tensor | None, g_spread: Tensor | None):  # type: ignore[override]
        A, G, *q0s = ctx.saved_tensors
        n_taps = 2 * ctx.iters * len(q0s)
        with torch.enable_grad():
            taps = [
                G.new_zeros(G.shape[0], G.shape[1], 1, requires_grad=True) for _ in range(n_taps)
            ]
            vs: list[Tensor] = []
            lam_max, spread = _gram_iterations(G, q0s, ctx.iters, taps, vs)
            outs, grads = [lam_max], [g_max if g_max is not None else torch.zeros_like(lam_max)]
            if spread is not None and g_spread is not None:
                outs.append(spread)
                grads.append(g_spread)
            adj = torch.autograd.grad(outs, taps, grads, allow_unused=True)
        U = torch.cat([a if a is not None else torch.zeros_like(t) for a, t in zip(adj, taps)], -1)
        V = torch.cat(vs, -1)  # (B, n, k): dL/dG = U V^T
        left = torch.cat([U, V], -1)  # (B, n, 2k)
        right = torch.cat([V, U], -1)  # (B, n, 2k): dL/dG + dL/dG^T = left right^T
        if ctx.gram_of_rows:  # G = A A^T, n = r: dA = left (right^T A)
            dA = left @ (right.transpose(-1, -2) @ A)  # (B, r, 2k) @ (B, 2k, c)
        else:  # G = A^T A, n = c: dA = (A left) right^T
            dA = (A @ left) @ right.transpose(-1, -2)  # (B, r, 2k) @ (B, 2k, c)
        return dA, None, None, None


def gram_extreme_eigs(F: Tensor, iters: int = 2) -> ExtremeEigs:
    """Extreme eigenvalues of ``F F^T`` for ``F`` (..., r, c), by eq. (5).

    If r > c, ``F F^T`` (r x r) is rank deficient: lambda_min = 0 exactly and lambda_1 comes
    from the smaller ``F^T F`` (same non-zero spectrum). Float32, autocast off,
    differentiable w.r.t. ``F`` (a low-rank backward, see ``_GramEigs``; the same gradient
    as autograd through the iterations, without its two Gram-sized matrix products).
    """
    if F.dim() < 2:
        raise ValueError(f"gram_extreme_eigs: expected matrices (..., r, c), got {tuple(F.shape)}")
    _check_iters(iters)
    batch_shape, (r, c) = F.shape[:-2], F.shape[-2:]
    with _fp32_no_autocast(F.device):
        A = F.float().reshape(-1, r, c)  # (B, r, c)
        n = min(r, c)
        # Start vectors drawn in the order of the plain iterations (lambda_1's, then the
        # shifted one's), so a given RNG state gives the same estimates.
        q0s = [torch.rand(A.shape[0], n, 1, device=F.device, dtype=torch.float32)]
        if r <= c:
            q0s.append(torch.rand(A.shape[0], n, 1, device=F.device, dtype=torch.float32))
        lam_max, spread = _GramEigs.apply(A, q0s, iters, r <= c)
        lam_min = lam_max - spread if r <= c else torch.zeros_like(lam_max)
    return ExtremeEigs(lam_max.reshape(batch_shape), lam_min.reshape(batch_shape))


class _OneStepRayleigh(torch.autograd.Function):
    """The authors' estimator on ``A = F F^T``, ``F`` (B, r, c), from the start rows ``S``
    (B, 2, r) (``x0``, ``z0``) -> lambda_1, lambda_min (B,), with a one-product backward.

    Forward (matrix-free, row vectors on the left of each product, the fast GEMM shape):
    ``x1 = A x0``, ``lambda_1 = ||F^T x1||^2 / ||x1||^2``; ``y1 = A z0 - lambda_1 z0``,
    ``lambda_min = ||F^T y1||^2 / ||y1||^2`` (their shifted estimate plus lambda_1, written as
    the Rayleigh quotient of ``A`` it equals: inside the spectrum even when ``y1`` is mostly
    rounding error, for ``A`` close to a multiple of I).
    Backward: ``F`` enters through the products ``S F``, ``P F^T``, ``x1 F`` and ``y1 F``, so
    ``dL/dF`` is a sum of four low-rank terms, formed by one (r x 6)(6 x c) product instead of
    autograd's four outer products and three Gram-sized additions. Lambda_1 is not detached
    in the shift: its gradient flows through ``y1`` as in their code.
    """

    @staticmethod
    def forward(ctx, F: Tensor, S: Tensor):  # type: ignore[override]
        P = S @ F  # (B, 2, c): (F^T x0)^T, (F^T z0)^T
        Q = P @ F.transpose(1, 2)  # (B, 2, r): (A x0)^T, (A z0)^T
        x1 = Q[:, :1]  # (B, 1, r)
        u = x1 @ F  # (B, 1, c)
        b = x1.square().sum((1, 2)).clamp_min(_TINY)  # (B,)
        lam_max = u.square().sum((1, 2)) / b
        y1 = Q[:, 1:] - lam_max.view(-1, 1, 1) * S[:, 1:]  # (B, 1, r): ((A - lambda_1 I) z0)^T
        w = y1 @ F  # (B, 1, c)
        f = y1.square().sum((1, 2)).clamp_min(_TINY)  # (B,)
        lam_min = w.square().sum((1, 2)) / f
        ctx.save_for_backward(F, S, P, x1, u, y1, w, b, f, lam_max, lam_min)
        return lam_max, lam_min

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_max: Tensor | None, g_min: Tensor | None):  # type: ignore[override]
        F, S, P, x1, u, y1, w, b, f, lam_max, lam_min = ctx.saved_tensors
        g_max = torch.zeros_like(lam_max) if g_max is None else g_max
        g_min = torch.zeros_like(lam_min) if g_min is None else g_min
        Ft = F.transpose(1, 2)  # (B, c, r)
        # lambda_min = ||w||^2 / ||y1||^2, w = y1 F
        dw = (2 * g_min / f).view(-1, 1, 1) * w  # (B, 1, c)
        dy1 = dw @ Ft - (2 * g_min * lam_min / f).view(-1, 1, 1) * y1  # (B, 1, r)
        # y1 = (A z0)^T - lambda_1 z0^T: lambda_1 also gets the shift's gradient
        d_max = g_max - (dy1 * S[:, 1:]).sum((1, 2))  # (B,)
        # lambda_1 = ||u||^2 / ||x1||^2, u = x1 F
        du = (2 * d_max / b).view(-1, 1, 1) * u  # (B, 1, c)
        dx1 = du @ Ft - (2 * d_max * lam_max / b).view(-1, 1, 1) * x1  # (B, 1, r)
        dQ = torch.cat([dx1, dy1], 1)  # (B, 2, r)
        dP = dQ @ F  # (B, 2, c): Q = P F^T
        left = torch.cat([y1, x1, dQ, S], 1)  # (B, 6, r)
        right = torch.cat([dw, du, P, dP], 1)  # (B, 6, c)
        return left.transpose(1, 2) @ right, None  # (B, r, c)


def _one_step_rayleigh(F: Tensor, x0: Tensor, z0: Tensor) -> ExtremeEigs:
    """The authors' estimator on ``A = F F^T`` for ``F`` (B, r, c), starts ``x0``, ``z0`` (B, r, 1):
    lambda_1 = x1^T A x1 / x1^T x1 with x1 = A x0; lambda_min = their estimate on
    ``A - lambda_1 I`` from ``z0``, plus lambda_1 (see ``_OneStepRayleigh``).
    """
    S = torch.cat([x0, z0], -1).transpose(1, 2)  # (B, 2, r): x0^T, z0^T
    lam_max, lam_min = _OneStepRayleigh.apply(F, S)
    return ExtremeEigs(lam_max, lam_min)


def _official_starts(batch: int, n: int, start: str, device: torch.device) -> tuple[Tensor, Tensor]:
    """The two fresh start vectors (B, n, 1) of the authors' estimator, lambda_1's first."""
    draw = torch.randn if start == "normal" else torch.rand
    x0 = draw(batch, n, 1, device=device, dtype=torch.float32)
    z0 = draw(batch, n, 1, device=device, dtype=torch.float32)
    return x0, z0


def official_extreme_eigs(F: Tensor, *, start: str = "normal") -> ExtremeEigs:
    """Extreme eigenvalues of ``F F^T`` (r x r) for ``F`` (..., r, c) as the authors' code
    estimates them: one product from a fresh random start, then a Rayleigh quotient, and the
    same on the shifted Gram (see the module docstring).

    ``start``: ``"normal"`` (their O.F.) or ``"uniform"`` in [0, 1) (their O.W.); draws two
    (B, r, 1) tensors, lambda_1's first. Float32, autocast off, differentiable w.r.t. ``F``.
    """
    if start not in OFFICIAL_STARTS:
        raise ValueError(f"start: expected one of {OFFICIAL_STARTS}, got {start!r}")
    if F.dim() < 2:
        raise ValueError(
            f"official_extreme_eigs: expected matrices (..., r, c), got {tuple(F.shape)}"
        )
    batch_shape, (r, c) = F.shape[:-2], F.shape[-2:]
    with _fp32_no_autocast(F.device):
        A = F.float().reshape(-1, r, c)  # (B, r, c)
        x0, z0 = _official_starts(A.shape[0], r, start, F.device)
        eigs = _one_step_rayleigh(A, x0, z0)
    return ExtremeEigs(eigs.lam_max.reshape(batch_shape), eigs.lam_min.reshape(batch_shape))


def svdo_penalty(F: Tensor, *, iters: int = 2, squared: bool = True, beta: float = 1.0) -> Tensor:
    """Eq. (4) per matrix: ``beta * (lambda_1(F F^T) - lambda_min(F F^T))^2``.

    ``F`` (..., r, c); returns (...,) in float32. ``squared=False`` gives the authors' code's
    un-squared O.F. variant ``beta * (lambda_1 - lambda_min)``.
    """
    eigs = gram_extreme_eigs(F, iters)
    diff = eigs.lam_max - eigs.lam_min
    return beta * (diff * diff if squared else diff)


def _check_form(form: str) -> None:
    if form not in SVDO_FORMS:
        raise ValueError(f"svdo_form: expected one of {SVDO_FORMS}, got {form!r}")


def _map_rows(fmap: Tensor) -> Tensor:
    """``fmap`` (B, C, H, W) as ``F`` (B, C, N), N = H*W, copy-free for channels_last maps."""
    B, C, H, W = fmap.shape
    if not fmap.is_contiguous() and fmap.is_contiguous(memory_format=torch.channels_last):
        # channels_last memory is (B, H, W, C): a transposed view instead of a copy
        return fmap.permute(0, 2, 3, 1).reshape(B, H * W, C).transpose(1, 2)  # (B, C, N)
    return fmap.reshape(B, C, H * W)  # (B, C, N)


def _paper_of_term(F: Tensor, iters: int, gram_norm: str) -> Tensor:
    """Eq. (4) per sample of ``F`` (B, C, N) with the Gram normalization ``gram_norm`` -> (B,)."""
    if gram_norm == "spatial":
        # F F^T / N == (F / sqrt(N)) (F / sqrt(N))^T
        return svdo_penalty(F.float() * F.shape[-1] ** -0.5, iters=iters, squared=True)
    if gram_norm == "none":
        return svdo_penalty(F, iters=iters, squared=True)
    # "relative": eq. (4) on F F^T / sqrt(lambda_1) = (lambda_1 - lambda_min)^2 / lambda_1
    eigs = gram_extreme_eigs(F, iters)
    spread = eigs.lam_max - eigs.lam_min
    return spread * spread / eigs.lam_max.clamp_min(_TINY)


def of_penalty(
    maps: Iterable[tuple[str, Tensor, float]],
    *,
    iters: int = 2,
    form: str = "paper",
    gram_norm: str = "relative",
    scale: float = 1.0,
) -> Tensor:
    """L_OF of eq. (6) (without beta_OF): SVDO on feature maps, summed over positions.

    ``maps``: ``(name, map (B, C, H, W), weight)`` as the model gives them. Each map becomes
    ``F`` (B, C, N) and eq. (4) is taken on each sample's ``F F^T`` (C x C).
    - ``form="paper"``: ``scale * weight * mean_b penalty_b`` with eq. (4) from ``iters``
      steps of eq. (5) on the Gram normalized by ``gram_norm``: ``"relative"`` (default,
      ``(lambda_1 - lambda_min)^2 / lambda_1``), ``"spatial"`` (``F F^T / N``) or ``"none"``
      (the raw ``F F^T``, eq. 4 literally). See the module docstring for why and for ``scale``.
    - ``form="official"``: the authors' code: ``weight * sum_b (lambda_1 - lambda_min) / (B/32)``
      with their one-step estimator (``official_extreme_eigs``, normal starts) on the raw
      ``F F^T``; ``iters``, ``gram_norm`` and ``scale`` do not apply. Their 0.01 for the shallow
      map and their mean over stripes are the maps' weights.
    Returns a float32 scalar (0 if there are no maps).
    """
    _check_form(form)
    if gram_norm not in GRAM_NORMS:
        raise ValueError(f"of_gram_norm: expected one of {GRAM_NORMS}, got {gram_norm!r}")
    if not scale >= 0:
        raise ValueError(f"of_paper_scale: expected a number >= 0, got {scale!r}")
    total: Tensor | None = None
    for entry in maps:
        if len(entry) != 3:
            raise ValueError(
                f"of_maps: expected (name, map, weight) triples, got {len(entry)} items"
            )
        name, fmap, weight = entry
        if fmap.dim() != 4:
            raise ValueError(
                f"of_maps[{name!r}]: expected a (B, C, H, W) map, got {tuple(fmap.shape)}"
            )
        F = _map_rows(fmap)  # (B, C, N)
        if form == "paper":
            term = scale * _paper_of_term(F, iters, gram_norm).mean()
        else:
            eigs = official_extreme_eigs(F, start="normal")
            term = (eigs.lam_max - eigs.lam_min).sum() / (F.shape[0] / _OFFICIAL_OF_BATCH)
        term = weight * term
        total = term if total is None else total + term
    if total is None:
        return torch.zeros((), dtype=torch.float32)
    return total


def _weight_rows(w: Tensor) -> Tensor:
    """``w`` (out, in, k, k) as ``W^T`` (out, in*k*k), copy-free for channels_last weights.

    A channels_last weight is stored as (out, k, k, in); flattening it in that order permutes
    the columns of ``W^T``, which leaves ``W^T W`` (out x out) unchanged. Only used when that
    is the Gram the iterations run on (out <= in*k*k); otherwise the columns index the Gram.
    """
    out = w.shape[0]
    if (
        w.dim() == 4
        and out <= w[0].numel()
        and not w.is_contiguous()
        and w.is_contiguous(memory_format=torch.channels_last)
    ):
        return w.permute(0, 2, 3, 1).reshape(out, -1)  # (out, k*k*in), a view
    return w.reshape(out, -1)  # (out, in*k*k)


def ow_penalty(weights: Sequence[Tensor], *, iters: int = 2, form: str = "paper") -> Tensor:
    """L_OW of eq. (6) (without beta_OW): SVDO on weights, summed over layers.

    A conv weight (out, in, k, k) (or linear (out, in)) is reshaped to ``W`` (in*k*k, out) and
    eq. (4) is taken on ``W^T W`` (out x out); the per-layer penalties are *summed*, as the
    authors' code does (the paper does not say).
    - ``form="paper"``: ``(lambda_1 - lambda_min)^2`` from ``iters`` steps of eq. (5); layers
      of equal shape are batched.
    - ``form="official"``: the authors' code: ``10 * (lambda_1 - lambda_min)^2`` with their
      one-step estimator (``official_extreme_eigs``, uniform starts) on ``W^T W``, layer by
      layer; a layer with one filter contributes 0 (their code skips it).
    Returns a float32 scalar (0 if there are no weights).
    """
    _check_form(form)
    for i, w in enumerate(weights):
        if w.dim() < 2:
            raise ValueError(
                f"ow_weights[{i}]: expected a conv/linear weight (out, in, ...), got {tuple(w.shape)}"
            )
    terms = _official_ow_terms(weights) if form == "official" else _paper_ow_terms(weights, iters)
    if not terms:
        return torch.zeros((), dtype=torch.float32)
    total = torch.stack(terms).sum()
    return _OFFICIAL_OW_SCALE * total if form == "official" else total


def _paper_ow_terms(weights: Sequence[Tensor], iters: int) -> list[Tensor]:
    groups: dict[tuple[int, ...], list[Tensor]] = {}
    for w in weights:
        groups.setdefault(tuple(w.shape), []).append(w)
    # W^T W in the paper's (in*k*k, out) layout is F F^T for F = weight.view(out, -1).
    return [
        svdo_penalty(torch.stack([_weight_rows(w) for w in ws]), iters=iters, squared=True).sum()
        for ws in groups.values()  # (L, out, in*k*k) per group
    ]


def _official_ow_terms(weights: Sequence[Tensor]) -> list[Tensor]:
    terms = []
    for w in weights:
        out = w.shape[0]
        if out == 1:
            continue
        with _fp32_no_autocast(w.device):
            # Their starts are (out, 1) per layer; a batch of one draws the same numbers.
            x0, z0 = _official_starts(1, out, "uniform", w.device)
            F = _weight_rows(w).float().unsqueeze(0)  # (1, out, in*k*k)
            eigs = _one_step_rayleigh(F, x0, z0)
        spread = eigs.lam_max - eigs.lam_min
        terms.append((spread * spread).sum())
    return terms
