"""Magnitude of the O.F. penalty (eq. 4) on realistic ResNet-50 feature maps.

Runs a torchvision ResNet-50 (random init, train-mode BN) on random 384x128 images and
reports, for the res_conv_2 (256 x 96*32) and res_conv_4 (1024 x 24*8) maps, the exact
extreme eigenvalues of F F^T (torch.linalg.eigvalsh, the baseline), the 2-iteration power
estimates and the per-sample penalty for the paper's squared form (raw and spatially
normalized Gram) and the official un-squared form, with beta_OF = 1e-6. Also times the
matrix-free eq. (5) against eigvalsh. Usage: python benchmarks/svdo_magnitude.py [batch]
"""

from __future__ import annotations

import sys
import time

import torch
import torchvision

from abdnet.losses.svdo import gram_extreme_eigs

BETA_OF = 1e-6


def _best_time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 4
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
    maps = (("res_conv_2", l1), ("res_conv_4", l3), ("Ta (reduction)", ta))
    for name, fmap in maps:
        B, C, H, W = fmap.shape
        F = fmap.reshape(B, C, H * W)  # (B, C, N)
        exact = torch.linalg.eigvalsh(F @ F.transpose(1, 2))  # (B, C) ascending
        t_eig = _best_time(lambda F=F: torch.linalg.eigvalsh(F @ F.transpose(1, 2)))
        est = gram_extreme_eigs(F, iters=2)
        t_pow = _best_time(lambda F=F: gram_extreme_eigs(F, iters=2))
        diff_true = exact[:, -1] - exact[:, 0]
        diff_est = est.lam_max - est.lam_min
        Fn = F / (H * W) ** 0.5
        est_n = gram_extreme_eigs(Fn, iters=2)
        diff_n = est_n.lam_max - est_n.lam_min
        print(f"{name}: F {C}x{H * W}, mean activation {fmap.mean():.3f}")
        print(
            f"  lambda_1 exact {exact[:, -1].mean():.4g}  2-iter {est.lam_max.mean():.4g}"
            f"  (rel err {((est.lam_max - exact[:, -1]) / exact[:, -1]).abs().max():.2e})"
        )
        print(f"  lambda_min exact {exact[:, 0].mean():.4g}  2-iter {est.lam_min.mean():.4g}")
        print(
            f"  paper squared, raw Gram:      {(BETA_OF * diff_est**2).mean():.4g} per sample"
            f" (exact eigenvalues: {(BETA_OF * diff_true**2).mean():.4g})"
        )
        print(f"  paper squared, Gram/N:        {(BETA_OF * diff_n**2).mean():.4g} per sample")
        print(
            f"  official un-squared, raw:     {(BETA_OF * diff_est).mean():.4g} per sample,"
            f" x32 per batch {(BETA_OF * diff_est).mean() * 32:.4g}"
        )
        print(
            f"  time: eigvalsh (baseline) {t_eig * 1e3:.1f} ms, eq.(5) 2 iters {t_pow * 1e3:.1f} ms,"
            f" ratio {t_eig / t_pow:.1f}x"
        )
    print(
        f"reference: cross-entropy at chance for 751 classes = {torch.log(torch.tensor(751.0)):.3f}"
    )


if __name__ == "__main__":
    main()
