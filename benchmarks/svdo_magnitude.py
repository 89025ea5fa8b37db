"""How strong are O.F. and O.W.? abdnet's SVDO forms against the authors' code and the CE.

Three sections (all by default; name some to run only those):

``of``  O.F. gradient with respect to the feature map, abdnet's forms / the authors' code, on
        random post-ReLU maps at two activation scales (beta_OF = 1e-6 in both). The baseline
        is the authors' estimator (``of_penalty(form="official")``: one product + Rayleigh
        quotient from a fresh normal start, un-squared, sum / (B/32)), which
        tests/losses/test_svdo_official.py checks against a literal transcription of their
        formulas. Their gradient is a random variable (fresh starts per call), so each abdnet
        form's whole-batch gradient norm is compared with (a) the norm of theirs averaged over
        ``--draws`` fresh starts (issue 22's statistic; still noise-dominated at 100), (a*) the
        norm of their expected gradient, the limit of (a) (``2 sqrt(sum phi'_i^2 l_i)`` per
        sample from the spectrum, ``phi'`` by ``--spectral-draws`` starts on the diagonalized
        Gram; losses/svdo.py derives it), and (b) the medians of the per-sample norms. Per
        map: kappa (their expected / the exact lambda_1 gradient), their mean along the exact
        gradient (a direct check of phi'_1), percentiles 10/50/90 of their whole-batch norm
        per start and the norm of the mean of 1, 10, 100 starts (both / the expected norm).
        ``--plot FILE``: a histogram PNG of their per-start norm on the attentive maps.
``ow``  O.W. gradient on every trunk conv of a trained network / the cross-entropy gradient
        on the same weights, one training batch (``--run RUN``: a run folder, e.g. the demo's
        ``DIR/run``). Paper form (beta_OW = 1e-3, eq. 4 squared, 2 iterations) and the
        authors' form (x10, one-step estimator; median over draws).
``resnet``  lambda_1 and the penalties on the maps of a torchvision ResNet-50 (random init,
        train-mode BN) on random 384x128 images; kappa and the default / the authors'
        expected O.F. gradient on them.

Usage: python benchmarks/svdo_magnitude.py [of] [ow --run RUN] [resnet]
         [--batch 8] [--draws 100] [--spectral-draws 2000] [--seeds 3] [--plot FILE]
         [--ow-draws 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable

import torch
import torchvision
from torch import Tensor

from abdnet.config import LossConfig
from abdnet.losses import CrossEntropyLabelSmooth, gram_extreme_eigs, of_penalty, ow_penalty

BETA_OF = LossConfig().beta_of
BETA_OW = LossConfig().beta_ow
PAPER_SCALE = LossConfig().of_paper_scale

# The paper form's scale before it was calibrated on the authors' expected gradient.
OLD_PAPER_SCALE = 128.0
# The authors' O.F. normalizes the batch sum to a 32-image batch.
_OFFICIAL_OF_BATCH = 32.0

# name -> penalty of one map (B, C, H, W) -> scalar, beta included
OF_FORMS: dict[str, Callable[[Tensor], Tensor]] = {
    f"paper relative x{PAPER_SCALE:g} (default)": lambda m: (
        BETA_OF * of_penalty([("m", m, 1.0)], form="paper", gram_norm="relative", scale=PAPER_SCALE)
    ),
    f"paper relative x{OLD_PAPER_SCALE:g} (before)": lambda m: (
        BETA_OF
        * of_penalty([("m", m, 1.0)], form="paper", gram_norm="relative", scale=OLD_PAPER_SCALE)
    ),
    "paper spatial (F F^T / N) x1": lambda m: (
        BETA_OF * of_penalty([("m", m, 1.0)], form="paper", gram_norm="spatial")
    ),
    "paper none (raw F F^T) x1": lambda m: (
        BETA_OF * of_penalty([("m", m, 1.0)], form="paper", gram_norm="none")
    ),
}


def _official(m: Tensor) -> Tensor:
    return BETA_OF * of_penalty([("m", m, 1.0)], form="official")


def _exact_unsquared(m: Tensor) -> Tensor:
    """The authors' scaling with (nearly) exact eigenvalues: 30 steps of eq. (5)."""
    B, C, H, W = m.shape
    eigs = gram_extreme_eigs(m.reshape(B, C, H * W), iters=30)
    return BETA_OF * (eigs.lam_max - eigs.lam_min).sum() / (B / _OFFICIAL_OF_BATCH)


def _grads(fmap: Tensor, penalty: Callable[[Tensor], Tensor], draws: int) -> Tensor:
    """d penalty / d map for ``draws`` calls (fresh random starts each) -> (draws, B, ...)."""
    out = []
    for _ in range(draws):
        m = fmap.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(penalty(m), m)
        out.append(g)
    return torch.stack(out)


def _spectrum(F: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (C,) of ``F F^T`` for ``F`` (C, N), descending, float64 (zeros padded when
    C > N), and the exact lambda_1 gradient ``d lambda_1 / d F = 2 v_1 v_1^T F`` (C, N)."""
    C, N = F.shape
    Fd = F.double()
    if C > N:  # same non-zero spectrum from the smaller N x N Gram, v_1 = F u_1 / sqrt(l_1)
        evals, U = torch.linalg.eigh(Fd.T @ Fd)
        v1 = Fd @ U[:, -1] / evals[-1].clamp_min(1e-300).sqrt()
        evals = torch.cat([evals.flip(0), evals.new_zeros(C - N)])
    else:
        evals, V = torch.linalg.eigh(Fd @ Fd.T)
        v1, evals = V[:, -1], evals.flip(0)
    return evals.clamp_min(0), 2 * torch.outer(v1, v1 @ Fd)


def _official_spectral_slopes(lam: Tensor, draws: int, seed: int) -> Tensor:
    """phi'_i = E[d (lambda_1_hat - lambda_min_hat) / d l_i] over the authors' normal starts,
    for ``A = diag(lam)`` (C,): by rotation invariance of the start, the expected penalty is a
    function of the spectrum only (see losses/svdo.py), so its expected gradient is
    ``V diag(phi') V^T`` in A and ``2 V diag(phi') V^T F`` in F."""
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(lam)
    chunk = min(draws, 500)
    done = 0
    while done < draws:
        k = min(chunk, draws - done)
        L = lam.detach().clone().requires_grad_(True)
        x0 = torch.randn(k, lam.numel(), generator=gen, dtype=lam.dtype)
        z0 = torch.randn(k, lam.numel(), generator=gen, dtype=lam.dtype)
        x1 = L * x0  # A x0
        lam1 = (x1 * L * x1).sum(1) / (x1 * x1).sum(1)
        y1 = L * z0 - lam1[:, None] * z0  # (A - lambda_1 I) z0
        lmin = (y1 * L * y1).sum(1) / (y1 * y1).sum(1)
        (g,) = torch.autograd.grad((lam1 - lmin).sum(), L)
        total += g
        done += k
    return total / draws


def _official_expectation(fmap: Tensor, draws: int, seed: int) -> dict[str, Tensor]:
    """The authors' expected O.F. gradient per sample of ``fmap`` (B, C, H, W), without their
    1/(B/32) and beta: its norm ``2 sqrt(sum phi'_i^2 l_i)``, ``kappa`` = that / the exact
    lambda_1 gradient's norm ``2 sqrt(l_1)``, ``phi'_1``, ``r = l_1^2 / sum_{i>1} l_i^2``, and
    the exact gradients (B, C, N)."""
    B, C, H, W = fmap.shape
    out: dict[str, list[Tensor]] = {k: [] for k in ("norm", "kappa", "slope1", "r", "exact")}
    for b in range(B):
        lam, exact = _spectrum(fmap[b].reshape(C, H * W))
        slopes = _official_spectral_slopes(lam, draws, seed + b)
        norm = 2 * (slopes.square() * lam).sum().sqrt()
        out["norm"].append(norm)
        out["kappa"].append(norm / (2 * lam[0].sqrt()))
        out["slope1"].append(slopes[0])
        out["r"].append(lam[0].square() / lam[1:].square().sum())
        out["exact"].append(exact)
    return {k: torch.stack(v) for k, v in out.items()}


@dataclasses.dataclass
class _Draws:
    """The authors' O.F. gradient over fresh starts on one batch, summarized as it streams."""

    total: Tensor  # sum of the whole-batch gradients (B, C, H, W), float64
    sq: float = 0.0  # sum of their squared norms
    n: int = 0
    batch_norms: list[float] = dataclasses.field(default_factory=list)
    sample_norms: list[Tensor] = dataclasses.field(default_factory=list)
    mean_norms: dict[int, float] = dataclasses.field(default_factory=dict)  # k -> |mean of k|

    def add(self, g: Tensor) -> None:
        g = g.double()
        self.total += g
        self.sq += g.square().sum().item()
        self.n += 1
        self.batch_norms.append(g.norm().item())
        self.sample_norms.append(g.flatten(1).norm(dim=1))
        if self.n in (1, 10, 100, 1000):
            self.mean_norms[self.n] = (self.total / self.n).norm().item()

    def mean(self) -> Tensor:
        return self.total / self.n

    def unbiased_expected_norm(self) -> float:
        """sqrt of the unbiased estimate of |E g|^2, (|sum g|^2 - sum |g|^2) / (n (n - 1))."""
        est = (self.total.square().sum().item() - self.sq) / (self.n * (self.n - 1))
        return math.sqrt(max(est, 0.0))


OF_SHAPES = {
    "attentive 1024 x 24*8": (1024, 24, 8, 1.0),
    "stripe 1024 x 12*8 (official heads)": (1024, 12, 8, 1.0),
    "shallow 256 x 96*32 (official weight 0.01)": (256, 96, 32, 0.01),
}


def _pct(t: Tensor, qs=(0.1, 0.5, 0.9)) -> str:
    return "/".join(f"{t.quantile(q).item():.3g}" for q in qs)


def of_section(batch: int, draws: int, seeds: int, spectral_draws: int, plot: str | None) -> None:
    print(f"== O.F.: gradient w.r.t. the map, abdnet / authors (beta_OF {BETA_OF:g}, B {batch})")
    print(
        "   maps relu(randn(B, C, H, W)) * scale. Ratios of abdnet's whole-batch gradient norm"
        f" to (a) the norm of the authors' averaged over {draws} fresh starts, (a*) the norm of"
        " their expected gradient (the limit of (a); spectral, noise-free), and (b) of the"
        " medians of the per-sample norms (samples x starts)"
    )
    hist: dict[str, list[float]] = {"theirs": [], "mean": []}
    marks: dict[str, list[float]] = {}
    for shape_name, (C, H, W, official_weight) in OF_SHAPES.items():
        b = min(batch, 4) if C == 256 else batch  # 256 x 3072 maps: keep the shallow row quick
        print(f"-- {shape_name} (B {b})")
        for scale in (1.0, 4.0):
            rows: dict[str, dict[str, list[float]]] = {}
            for seed in range(seeds):
                torch.manual_seed(seed)
                fmap = scale * torch.relu(torch.randn(b, C, H, W))
                unit = official_weight * BETA_OF * _OFFICIAL_OF_BATCH / b  # their factor per sample
                spec = _official_expectation(fmap, spectral_draws, 1000 * seed)
                expected = unit * spec["norm"].square().sum().sqrt().item()  # whole batch
                t0 = time.perf_counter()
                theirs = _Draws(torch.zeros(fmap.shape, dtype=torch.float64))
                for _ in range(draws):
                    theirs.add(official_weight * _grads(fmap, _official, 1)[0])
                t_off = (time.perf_counter() - t0) / draws
                exact = unit * spec["exact"]  # (B, C, N): their scaling, exact eigenvalues
                mean = theirs.mean().reshape(exact.shape)
                along = (mean * exact).sum((1, 2)) / exact.square().sum((1, 2))  # (B,)
                theirs_samples = torch.cat(theirs.sample_norms)
                batch_norms = torch.tensor(theirs.batch_norms)
                lit = theirs.mean().norm().item()
                if shape_name.startswith("attentive") and scale == 1.0:
                    hist["theirs"] += (batch_norms / expected).tolist()
                    hist["mean"].append(lit / expected)
                print(
                    f"   scale {scale:g} seed {seed}: r = l1^2/sum l_i>1^2 {spec['r'].mean():.3g};"
                    f" kappa {spec['kappa'].mean():.4f} (phi'_1 {spec['slope1'].mean():.4f};"
                    f" direct, along d l1: {along.mean():.4f} +- "
                    f"{along.std().item() / math.sqrt(b) if b > 1 else float('nan'):.2g});"
                    f" authors' batch norm per start / expected p10/50/90"
                    f" {_pct(batch_norms / expected)}; |mean of k starts| / expected"
                    f" {', '.join(f'k={k}: {v / expected:.3g}' for k, v in theirs.mean_norms.items())};"
                    f" unbiased {theirs.unbiased_expected_norm() / expected:.3g}; {t_off * 1e3:.0f} ms"
                )
                forms = {**OF_FORMS, "exact eigenvalues, authors' scaling": _exact_unsquared}
                for name, pen in forms.items():
                    g = _grads(fmap, pen, 1)[0]
                    ours = g.flatten(1).norm(dim=1)
                    stats = {
                        "(a)": g.norm().item() / lit,
                        "(a*)": g.norm().item() / expected,
                        "(b)": ours.median().item() / theirs_samples.median().item(),
                    }
                    for stat, r in stats.items():
                        rows.setdefault(name, {}).setdefault(stat, []).append(r)
                    if shape_name.startswith("attentive") and scale == 1.0:
                        marks.setdefault(name, []).append(g.norm().item() / expected)
            print(
                f"   {'scale ' + format(scale, 'g'):9s} {'abdnet form':44s} {'(a)':>9s} {'(a*)':>9s} {'(b)':>9s}"
            )
            for name, stats in rows.items():
                cells = " ".join(f"{sum(v) / len(v):9.4g}" for v in stats.values())
                print(f"   {'':9s} {name:44s} {cells}")
    if plot:
        _plot_official(plot, hist, marks, batch, draws)


def _plot_official(path: str, hist: dict, marks: dict, batch: int, draws: int) -> None:
    """Histogram of the authors' whole-batch O.F. gradient norm per start (attentive maps,
    scale 1), in units of their expected gradient's norm, with the abdnet forms marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from abdnet.files import atomic_file

    values = torch.tensor(hist["theirs"])
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bins = torch.logspace(math.log10(values.min().item()), math.log10(values.max().item()), 40)
    ax.hist(
        values.numpy(), bins=bins.numpy(), color="0.6", label=f"authors, one start ({len(values)})"
    )
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=2, label="authors, expected (a*)")
    lit = sum(hist["mean"]) / len(hist["mean"])
    ax.axvline(lit, color="k", ls=":", label=f"authors, mean of {draws} starts (a): {lit:.2g}")
    for (name, v), color in zip(marks.items(), ("C0", "C1", "C2", "C3", "C4", "C5")):
        if "none" in name:
            continue  # orders of magnitude off the scale
        m = sum(v) / len(v)
        ax.axvline(m, color=color, ls="--", label=f"{name}: {m:.2g}")
    ax.set_xlabel("whole-batch gradient norm / authors' expected gradient norm")
    ax.set_ylabel("starts")
    ax.set_title(f"O.F. gradient, attentive 1024 x 24*8 maps, B {batch}, scale 1", fontsize=9)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    print(f"   histogram: {path}")


def _train_batch(run: str):
    """The trained model rebuilt with O.W. on every trunk conv, and one training batch."""
    from abdnet.data import build_dataset
    from abdnet.data.loader import build_train_loader
    from abdnet.models import build_model_from_config, load_model

    loaded = load_model(run)
    cfg = loaded.config
    model = build_model_from_config(
        dataclasses.replace(cfg.model, ow_scope="all", pretrained="none"), loaded.num_classes
    )
    model.load_state_dict(loaded.model.state_dict())
    dataset = build_dataset(cfg.data)
    loader = build_train_loader(
        dataset.train, dataset.read_image, dataclasses.replace(cfg.data, workers=0)
    )
    loader.sampler.set_epoch(0)
    images, pids, _cams, *_ = next(iter(loader))
    return model.train(), images, pids, cfg


def ow_section(run: str, draws: int) -> None:
    torch.manual_seed(0)
    model, x, y, cfg = _train_batch(run)
    weights = model.ow_weights()
    out = model(x)
    xent_fn = CrossEntropyLabelSmooth(model.num_classes, cfg.loss.label_smooth)
    xent = torch.stack([xent_fn(logits, y) for logits in out.logits]).mean()
    ce = torch.autograd.grad(xent, weights, allow_unused=True)
    paper = torch.autograd.grad(BETA_OW * ow_penalty(weights, form="paper"), weights)
    official = [
        torch.autograd.grad(BETA_OW * ow_penalty(weights, form="official"), weights)
        for _ in range(draws)
    ]
    print(
        f"== O.W. on {len(weights)} trunk convs of {run} ({cfg.model.backbone}, one batch of"
        f" {x.shape[0]}): gradient norm / cross-entropy's on the same weight"
    )
    print(
        f"   {'conv':>4s} {'shape':>18s} {'|dCE|':>9s} {'paper':>9s} {'ratio':>8s}"
        f" {'authors (median)':>17s} {'ratio':>8s}"
    )
    rp, ro = [], []
    for i, w in enumerate(weights):
        c = ce[i].norm().item() if ce[i] is not None else 0.0
        p = paper[i].norm().item()
        o = torch.tensor([g[i].norm().item() for g in official]).median().item()
        rp.append(p / c if c > 0 else math.inf)
        ro.append(o / c if c > 0 else math.inf)
        print(
            f"   {i:4d} {str(tuple(w.shape)):>18s} {c:9.3g} {p:9.3g} {rp[-1]:8.3g}"
            f" {o:17.3g} {ro[-1]:8.3g}"
        )
    for name, r in (("paper", rp), ("authors'", ro)):
        t = torch.tensor(r)
        print(
            f"   {name:9s} ratio over layers: median {t.median():.3g}, min {t.min():.3g},"
            f" max {t.max():.3g}"
        )
    total_ce = torch.sqrt(sum(g.square().sum() for g in ce if g is not None)).item()
    total_p = torch.sqrt(sum(g.square().sum() for g in paper)).item()
    print(f"   all trunk convs together: |d O.W.| / |d CE| = {total_p / total_ce:.3g} (paper form)")


def _best_time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def resnet_section(batch: int, spectral_draws: int) -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).train()
    x = torch.randn(batch, 3, 384, 128)
    with torch.no_grad():
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        l1 = net.layer1(y)
        l3 = net.layer3(net.layer2(l1))
        # Ta of the paper: stride-1 res_conv_5, then the 1x1 reduction conv + BN + ReLU.
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        reduction = torch.nn.Sequential(
            torch.nn.Conv2d(2048, 1024, 1, bias=False), torch.nn.BatchNorm2d(1024), torch.nn.ReLU()
        ).train()
        ta = reduction(net.layer4(l3))
    print(f"== ResNet-50 maps (random init, train-mode BN, {batch} random 384x128 images)")
    for name, fmap in (("res_conv_2", l1), ("res_conv_4", l3), ("Ta (reduction)", ta)):
        B, C, H, W = fmap.shape
        F = fmap.reshape(B, C, H * W)  # (B, C, N)
        exact = torch.linalg.eigvalsh(F.double() @ F.double().transpose(1, 2))  # ascending
        t_eig = _best_time(lambda F=F: torch.linalg.eigvalsh(F @ F.transpose(1, 2)))
        est = gram_extreme_eigs(F, iters=2)
        t_pow = _best_time(lambda F=F: gram_extreme_eigs(F, iters=2))
        print(f"  {name}: F {C}x{H * W}, mean activation {fmap.mean():.3f}")
        print(
            f"    lambda_1 exact {exact[:, -1].mean():.4g}  2-iter {est.lam_max.mean():.4g}"
            f"  (rel err {((est.lam_max - exact[:, -1]) / exact[:, -1]).abs().max():.2e})"
        )
        print(f"    lambda_min exact {exact[:, 0].mean():.4g}  2-iter {est.lam_min.mean():.4g}")
        values = {
            "paper relative x scale (default)": BETA_OF
            * of_penalty([("m", fmap, 1.0)], gram_norm="relative", scale=PAPER_SCALE),
            "paper spatial": BETA_OF * of_penalty([("m", fmap, 1.0)], gram_norm="spatial"),
            "paper none": BETA_OF * of_penalty([("m", fmap, 1.0)], gram_norm="none"),
            "authors' (one draw)": BETA_OF * of_penalty([("m", fmap, 1.0)], form="official"),
        }
        for k, v in values.items():
            print(f"    L_OF {k:34s} {v.item():.4g} per batch")
        spec = _official_expectation(fmap, spectral_draws, 0)
        expected = BETA_OF * _OFFICIAL_OF_BATCH / B * spec["norm"].square().sum().sqrt().item()
        m = fmap.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(OF_FORMS[next(iter(OF_FORMS))](m), m)
        print(
            f"    authors' expected O.F. gradient: kappa {spec['kappa'].mean():.4f}"
            f" (per sample {', '.join(f'{k:.4f}' for k in spec['kappa'].tolist())}),"
            f" r {spec['r'].mean():.3g}; default / authors' expected (a*), weight 1:"
            f" {g.norm().item() / expected:.4f}"
        )
        print(
            f"    time: eigvalsh (baseline) {t_eig * 1e3:.1f} ms, eq.(5) 2 iters {t_pow * 1e3:.1f} ms,"
            f" ratio {t_eig / t_pow:.1f}x"
        )
    print(f"  reference: cross-entropy at chance for 751 classes = {math.log(751):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sections", nargs="*", choices=["of", "ow", "resnet"], default=[])
    parser.add_argument("--run", help="trained run folder for the ow section")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--draws", type=int, default=100, help="authors' O.F. starts per map")
    parser.add_argument(
        "--spectral-draws",
        type=int,
        default=2000,
        help="starts for the authors' expected gradient (spectral, per sample)",
    )
    parser.add_argument(
        "--plot", metavar="FILE", help="histogram PNG of the authors' O.F. gradient"
    )
    parser.add_argument("--ow-draws", type=int, default=32, help="authors' O.W. draws")
    parser.add_argument("--seeds", type=int, default=3, help="random maps per O.F. row")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sections = args.sections or (["of", "ow", "resnet"] if args.run else ["of", "resnet"])
    if "ow" in sections and not args.run:
        parser.error("the ow section needs --run RUN (a trained run folder)")
    if args.plot and "of" not in sections:
        parser.error("--plot: the histogram comes from the of section; name it")
    if args.draws < 2 or args.spectral_draws < 1:
        parser.error("--draws: at least 2 starts; --spectral-draws: at least 1")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if "of" in sections:
        of_section(args.batch, args.draws, args.seeds, args.spectral_draws, args.plot)
    if "ow" in sections:
        ow_section(args.run, args.ow_draws)
    if "resnet" in sections:
        resnet_section(min(args.batch, 4), args.spectral_draws)


if __name__ == "__main__":
    main()
