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
On the ResNet-50 maps below lambda_1 is within 1e-5 of ``eigvalsh``.

Official form. ``form="official"`` reproduces the scaling of the authors' code (O.F.
un-squared and summed over the batch / (B/32); O.W. times 10), not its estimator (one
matrix-vector product then a Rayleigh quotient, where the paper says two eq. (5) steps).

Magnitude. Measured with ``benchmarks/svdo_magnitude.py`` (torchvision ResNet-50, random
init, train-mode BN, 4 random 384x128 images; beta_OF = 1e-6; per map and sample):

    map (F)                         lambda_1(FF^T)  eq.4 raw Gram  eq.4 on FF^T/N  official
    Ta, reduction out, 1024 x 24*8   3.2e4           1.0e3          0.027           0.032
    res_conv_4 out, 1024 x 24*8      4.8e5           2.3e5          6.2             0.48
    res_conv_2 out, 256 x 96*32      8.6e5           7.3e5          0.077           0.85

lambda_1 is dominated by the non-zero mean of post-ReLU activations (~ C * N * mean^2), so
eq. (4) squared on the raw Gram with beta_OF = 1e-6 is 1e2-1e5 times the cross-entropy
(ln 751 = 6.6 at chance) for every regularized map: the classification gradient would be
drowned. The authors' code avoids this by not squaring (``form="official"``, which sums over
the batch / (B/32): ~1.0 per batch for Ta). For ``form="paper"`` we keep eq. (4)'s squared
form, beta and the batch mean, but default to the spatially normalized Gram ``F F^T / N``
(``gram_norm="spatial"``, config ``loss.of_gram_norm``): the second-moment matrix of the
channel vectors, whose size does not grow with the map's resolution (0.03 per map for Ta).
``gram_norm="none"`` is eq. (4) on the raw Gram, literally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "ExtremeEigs",
    "power_iteration",
    "power_iteration_eigs",
    "gram_extreme_eigs",
    "svdo_penalty",
    "of_penalty",
    "ow_penalty",
    "SVDO_FORMS",
    "GRAM_NORMS",
]

SVDO_FORMS = ("paper", "official")
GRAM_NORMS = ("spatial", "none")

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


def of_penalty(
    maps: Iterable[tuple[str, Tensor, float]],
    *,
    iters: int = 2,
    form: str = "paper",
    gram_norm: str = "spatial",
) -> Tensor:
    """L_OF of eq. (6) (without beta_OF): SVDO on feature maps, summed over positions.

    ``maps``: ``(name, map (B, C, H, W), weight)`` as in ``ModelOutput.of_maps``. Each map
    becomes ``F`` (B, C, N) and eq. (4) is taken on each sample's ``F F^T`` (C x C).
    - ``form="paper"``: ``weight * mean_b (lambda_1 - lambda_min)^2`` ("batch-wise": the mean
      over the batch), on ``F F^T / N`` if ``gram_norm="spatial"`` (default, see the module
      docstring for why) or on the raw ``F F^T`` if ``"none"`` (eq. 4 literally).
    - ``form="official"``: the authors' code: ``weight * sum_b (lambda_1 - lambda_min) / (B/32)``
      on the raw ``F F^T`` (``gram_norm`` is ignored); its 0.01 for the shallow map is the
      map's weight.
    Returns a float32 scalar (0 if there are no maps).
    """
    _check_form(form)
    if gram_norm not in GRAM_NORMS:
        raise ValueError(f"of_gram_norm: expected one of {GRAM_NORMS}, got {gram_norm!r}")
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
        B, C, H, W = fmap.shape
        if not fmap.is_contiguous() and fmap.is_contiguous(memory_format=torch.channels_last):
            # channels_last memory is (B, H, W, C): a transposed view instead of a copy
            F = fmap.permute(0, 2, 3, 1).reshape(B, H * W, C).transpose(1, 2)  # (B, C, N)
        else:
            F = fmap.reshape(B, C, H * W)  # (B, C, N)
        if form == "paper":
            if gram_norm == "spatial":
                # F F^T / N == (F / sqrt(N)) (F / sqrt(N))^T
                F = F.float() * (H * W) ** -0.5
            term = svdo_penalty(F, iters=iters, squared=True).mean()
        else:
            term = svdo_penalty(F, iters=iters, squared=False).sum() / (B / _OFFICIAL_OF_BATCH)
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
    authors' code does (the paper does not say). ``form="official"`` multiplies by 10 (the
    code's ``10 * beta * (lambda_1 - lambda_min)^2``). Layers of equal shape are batched.
    Returns a float32 scalar (0 if there are no weights).
    """
    _check_form(form)
    groups: dict[tuple[int, ...], list[Tensor]] = {}
    for i, w in enumerate(weights):
        if w.dim() < 2:
            raise ValueError(
                f"ow_weights[{i}]: expected a conv/linear weight (out, in, ...), got {tuple(w.shape)}"
            )
        groups.setdefault(tuple(w.shape), []).append(w)
    total: Tensor | None = None
    for ws in groups.values():
        # W^T W in the paper's (in*k*k, out) layout is F F^T for F = weight.view(out, -1).
        F = torch.stack([_weight_rows(w) for w in ws])  # (L, out, in*k*k)
        term = svdo_penalty(F, iters=iters, squared=True).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros((), dtype=torch.float32)
    if form == "official":
        total = _OFFICIAL_OW_SCALE * total
    return total
