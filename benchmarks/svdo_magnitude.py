"""How strong are O.F. and O.W.? abdnet's SVDO forms against the authors' code and the CE.

Three sections (all by default; name some to run only those):

``of``  O.F. gradient with respect to the feature map, abdnet's forms / the authors' code, on
        random post-ReLU maps at two activation scales (beta_OF = 1e-6 in both). The baseline
        is the authors' estimator (``of_penalty(form="official")``: one product + Rayleigh
        quotient from a fresh normal start, un-squared, sum / (B/32)), which
        tests/losses/test_svdo_official.py checks against a literal transcription of their
        formulas. Its per-sample gradient norm is heavy-tailed, so the table shows the median
        over samples x fresh starts (the statistic the calibration uses), the mean, the 90th
        percentile; the ratios use the median and the geometric mean of the per-sample norms
        and the median over draws of the whole-batch norm at the given batch, and the norm
        of the whole batch's gradient averaged over the ``--draws`` fresh starts (the
        quantity SGD applies on average; ``--draws 100`` as issue 22 states it).
``ow``  O.W. gradient on every trunk conv of a trained network / the cross-entropy gradient
        on the same weights, one training batch (``--run RUN``: a run folder, e.g. the demo's
        ``DIR/run``). Paper form (beta_OW = 1e-3, eq. 4 squared, 2 iterations) and the
        authors' form (x10, one-step estimator; median over draws).
``resnet``  lambda_1 and the penalties on the maps of a torchvision ResNet-50 (random init,
        train-mode BN) on random 384x128 images.

Usage: python benchmarks/svdo_magnitude.py [of] [ow --run RUN] [resnet]
         [--batch 8] [--draws 64] [--seeds 3] [--ow-draws 32] [--threads 1]
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
from abdnet.losses.svdo import official_extreme_eigs

BETA_OF = LossConfig().beta_of
BETA_OW = LossConfig().beta_ow
PAPER_SCALE = LossConfig().of_paper_scale

# name -> penalty of one map (B, C, H, W) -> scalar, beta included
OF_FORMS: dict[str, Callable[[Tensor], Tensor]] = {
    f"paper relative x{PAPER_SCALE:g} (default)": lambda m: (
        BETA_OF * of_penalty([("m", m, 1.0)], form="paper", gram_norm="relative", scale=PAPER_SCALE)
    ),
    "paper spatial (F F^T / N)": lambda m: (
        BETA_OF * of_penalty([("m", m, 1.0)], form="paper", gram_norm="spatial")
    ),
    "paper none (raw F F^T)": lambda m: (
        BETA_OF * of_penalty([("m", m, 1.0)], form="paper", gram_norm="none")
    ),
}


def _official(m: Tensor) -> Tensor:
    return BETA_OF * of_penalty([("m", m, 1.0)], form="official")


def _exact_unsquared(m: Tensor) -> Tensor:
    """The authors' scaling with (nearly) exact eigenvalues: 30 steps of eq. (5)."""
    B, C, H, W = m.shape
    eigs = gram_extreme_eigs(m.reshape(B, C, H * W), iters=30)
    return BETA_OF * (eigs.lam_max - eigs.lam_min).sum() / (B / 32)


def _grads(fmap: Tensor, penalty: Callable[[Tensor], Tensor], draws: int) -> Tensor:
    """d penalty / d map for ``draws`` calls (fresh random starts each) -> (draws, B, ...)."""
    out = []
    for _ in range(draws):
        m = fmap.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(penalty(m), m)
        out.append(g)
    return torch.stack(out)


def _per_sample(g: Tensor) -> Tensor:
    return g.flatten(2).norm(dim=2).flatten()  # (draws * B,)


def of_section(batch: int, draws: int, seeds: int) -> None:
    shapes = {
        "attentive 1024 x 24*8": (1024, 24, 8, 1.0),
        "stripe 1024 x 12*8 (official heads)": (1024, 12, 8, 1.0),
        "shallow 256 x 96*32 (official weight 0.01)": (256, 96, 32, 0.01),
    }
    print(f"== O.F.: gradient w.r.t. the map, abdnet / authors (beta_OF {BETA_OF:g}, B {batch})")
    print("   maps: relu(randn(B, C, H, W)) * scale; medians over samples x draws")
    for shape_name, (C, H, W, official_weight) in shapes.items():
        if C == 256 and batch > 4:
            b = 4  # 256 x 3072 maps: keep the shallow row quick
        else:
            b = batch
        print(f"-- {shape_name} (B {b})")
        for scale in (1.0, 4.0):
            per_seed: dict[str, list[float]] = {}
            for seed in range(seeds):
                torch.manual_seed(seed)
                fmap = scale * torch.relu(torch.randn(b, C, H, W))
                t0 = time.perf_counter()
                theirs_g = official_weight * _grads(fmap, _official, draws)
                t_off = (time.perf_counter() - t0) / draws
                theirs = _per_sample(theirs_g)
                theirs_batch = theirs_g.flatten(1).norm(dim=1)  # (draws,)
                # what SGD applies on average: the whole batch's gradient averaged over starts
                theirs_expected = theirs_g.mean(dim=0).norm().item()
                med = theirs.median().item()
                if seed == 0:
                    eigs = gram_extreme_eigs(fmap.reshape(b, C, H * W), iters=30)
                    est = official_extreme_eigs(fmap.reshape(b, C, H * W))
                    print(
                        f"   scale {scale:g}: lambda_1 {eigs.lam_max.mean():.4g}, authors'"
                        f" estimate {est.lam_max.mean():.4g}; lambda_min {eigs.lam_min.mean():.4g},"
                        f" authors' {est.lam_min.mean():.4g}; authors' per-sample grad norm:"
                        f" median {med:.3g}, mean {theirs.mean():.3g},"
                        f" p90 {theirs.quantile(0.9):.3g}; {t_off * 1e3:.0f} ms per call"
                    )
                forms = {**OF_FORMS, "exact eigenvalues, authors' scaling": _exact_unsquared}
                for name, pen in forms.items():
                    g = _grads(fmap, pen, 1)
                    ours = _per_sample(g)
                    stats = {
                        "median": ours.median().item() / med,
                        "geo. mean": (ours.log().mean() - theirs.log().mean()).exp().item(),
                        f"batch norm, B {b}": g.flatten(1).norm().item()
                        / theirs_batch.median().item(),
                        f"expected batch gradient, B {b}, {draws} starts": g.flatten(1)
                        .norm()
                        .item()
                        / theirs_expected,
                    }
                    for stat, r in stats.items():
                        per_seed.setdefault(f"{name} [{stat}]", []).append(r)
            for name, ratios in per_seed.items():
                spread = f" (seeds: {', '.join(f'{r:.3g}' for r in ratios)})" if seeds > 1 else ""
                print(f"   scale {scale:g}  {name:60s} {sum(ratios) / len(ratios):9.4g}x{spread}")


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


def resnet_section(batch: int) -> None:
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
    parser.add_argument("--draws", type=int, default=64, help="authors' O.F. draws per map")
    parser.add_argument("--ow-draws", type=int, default=32, help="authors' O.W. draws")
    parser.add_argument("--seeds", type=int, default=3, help="random maps per O.F. row")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sections = args.sections or (["of", "ow", "resnet"] if args.run else ["of", "resnet"])
    if "ow" in sections and not args.run:
        parser.error("the ow section needs --run RUN (a trained run folder)")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if "of" in sections:
        of_section(args.batch, args.draws, args.seeds)
    if "ow" in sections:
        ow_section(args.run, args.ow_draws)
    if "resnet" in sections:
        resnet_section(min(args.batch, 4))


if __name__ == "__main__":
    main()
