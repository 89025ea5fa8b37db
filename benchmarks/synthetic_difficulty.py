"""How hard is the built-in synthetic re-ID set? mAP / rank-1 of untrained features.

Run: ``python benchmarks/synthetic_difficulty.py [--ids 40 --cams 4 --per-id 8 --seed 0]
[--input 128x64] [--train-seconds 120 --train-arch resnet18|small]``.

Reports, on the synthetic test split (query vs gallery, Market-1501 protocol): (0) random
ranking (chance level, mean of 5 draws), (a) raw pixels (64x32, per-image standardised),
(b) global-average-pooled features of a randomly initialised torchvision ResNet-18
(ImageNet-style network, no weights downloaded), (c) a per-image RGB histogram, and
optionally (d) a network (ResNet-18, or a small 8-conv net that trains fast on CPU) after
``--train-seconds`` of training on the synthetic training split (cross-entropy + batch-hard
triplet, P x K batches from ``RandomIdentitySampler``, the library's train transform) to
show that the identities are learnable. The set is meant to give near-chance numbers for
(a)-(c) and a clearly higher one for (d).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from abdnet.config import DataConfig, SyntheticConfig
from abdnet.data import (
    RandomIdentitySampler,
    build_test_transform,
    build_train_transform,
    open_dataset,
)


def simple_rank(distmat: np.ndarray, q_pids, g_pids, q_cams, g_cams) -> tuple[float, float]:
    """mAP and rank-1 with the Market-1501 protocol (same id + same camera excluded)."""
    aps, r1 = [], []
    for i in range(distmat.shape[0]):
        keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        order = np.argsort(distmat[i][keep], kind="stable")
        match = (g_pids[keep][order] == q_pids[i]).astype(np.float64)
        if match.sum() == 0:
            continue
        hits = np.cumsum(match)
        aps.append(float((hits / np.arange(1, len(match) + 1) * match).sum() / match.sum()))
        r1.append(match[0])
    return float(np.mean(aps)), float(np.mean(r1))


def rank(qf: torch.Tensor, gf: torch.Tensor, q, g) -> tuple[float, float]:
    dist = torch.cdist(qf.double(), gf.double()).numpy()
    q_pids, q_cams = np.array([r.pid for r in q]), np.array([r.camid for r in q])
    g_pids, g_cams = np.array([r.pid for r in g]), np.array([r.camid for r in g])
    try:  # the library's evaluation when it exists
        from abdnet.evaluation import evaluate_rank

        res = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)
        return float(res.mAP), float(res.cmc[0])
    except ImportError:
        return simple_rank(dist, q_pids, g_pids, q_cams, g_cams)


def stack(ds, records, transform) -> torch.Tensor:
    return torch.stack([transform(ds.read_image(r)) for r in records])


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    outs = [model(x[i : i + 128]) for i in range(0, len(x), 128)]
    # an abdnet network returns a ModelOutput, a torchvision one a tensor
    return torch.cat([getattr(o, "embedding", o) for o in outs])


def resnet18_features() -> nn.Module:
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    net.fc = nn.Identity()  # GAP output, 512-d
    return net


def small_cnn() -> nn.Module:
    """A 4-stage conv net (about 0.4 M parameters): a cheap stand-in to check learnability."""
    layers: list[nn.Module] = []
    c_in = 3
    for c_out in (32, 64, 128, 256):
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def train_net(ds, data_cfg: DataConfig, seconds: float, seed: int, arch: str) -> nn.Module:
    torch.manual_seed(seed)
    net = resnet18_features() if arch == "resnet18" else small_cnn()
    dim = 512 if arch == "resnet18" else 256
    head = nn.Linear(dim, ds.num_train_pids)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=3e-4, weight_decay=5e-4)
    transform = build_train_transform(data_cfg)
    pids = [r.pid for r in ds.train]
    sampler = RandomIdentitySampler(pids, data_cfg.batch_size, data_cfg.num_instances, seed)
    images = [ds.read_image(r) for r in ds.train]
    start, epoch, steps = time.time(), 0, 0
    while time.time() - start < seconds:
        sampler.set_epoch(epoch)
        order = list(sampler)
        net.train()
        for b in range(0, len(order), data_cfg.batch_size):
            idx = order[b : b + data_cfg.batch_size]
            x = torch.stack([transform(images[i]) for i in idx])
            y = torch.tensor([pids[i] for i in idx])
            f = net(x)
            d = torch.cdist(f, f)
            same = y[:, None] == y[None, :]
            hardest_pos = (d * same).max(1).values
            hardest_neg = (d + 1e6 * same).min(1).values
            loss = (
                F.cross_entropy(head(f), y, label_smoothing=0.1)
                + F.relu(hardest_pos - hardest_neg + 0.3).mean()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.time() - start > seconds:
                break
        epoch += 1
    print(
        f"  trained {steps} steps ({epoch} epochs) in {time.time() - start:.0f} s, last loss {loss.item():.3f}"
    )
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=SyntheticConfig.ids)
    ap.add_argument("--cams", type=int, default=SyntheticConfig.cams)
    ap.add_argument("--per-id", type=int, default=SyntheticConfig.per_id)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-arch", choices=["resnet18", "small"], default="resnet18")
    ap.add_argument("--input", default="128x64", help="network input HxW (smaller trains faster)")
    ap.add_argument(
        "--train-seconds", type=float, default=0.0, help="also train a ResNet-18 this long (d)"
    )
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    syn = SyntheticConfig(ids=args.ids, cams=args.cams, per_id=args.per_id, seed=args.seed)
    t0 = time.time()
    ds = open_dataset("synthetic", config=syn)
    in_h, in_w = (int(v) for v in args.input.lower().split("x"))
    data_cfg = DataConfig(height=in_h, width=in_w, batch_size=32, num_instances=4)
    test_tf = build_test_transform(data_cfg)
    q, g = stack(ds, ds.query, test_tf), stack(ds, ds.gallery, test_tf)
    print(
        f"synthetic ids={syn.ids} cams={syn.cams} per_id={syn.per_id} seed={syn.seed}: "
        f"{len(ds.query)} queries x {len(ds.gallery)} gallery, rendered in {time.time() - t0:.1f} s"
    )

    def raw(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(64, 32), mode="bilinear", align_corners=False).flatten(1)
        return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)

    results = {"(a) raw pixels 64x32": rank(raw(q), raw(g), ds.query, ds.gallery)}
    chance = [
        rank(torch.randn(len(q), 8), torch.randn(len(g), 8), ds.query, ds.gallery) for _ in range(5)
    ]
    results["(0) random ranking (chance)"] = tuple(
        float(np.mean(v)) for v in zip(*chance, strict=True)
    )

    def hist(records) -> torch.Tensor:
        feats = []
        for r in records:
            a = np.asarray(ds.read_image(r)) // 32  # 8 bins per channel
            h = np.bincount((a[..., 0] * 64 + a[..., 1] * 8 + a[..., 2]).ravel(), minlength=512)
            feats.append(np.sqrt(h / h.sum()))
        return torch.tensor(np.array(feats))

    results["(c) RGB histogram 8x8x8"] = rank(
        hist(ds.query), hist(ds.gallery), ds.query, ds.gallery
    )
    torch.manual_seed(0)
    net = resnet18_features()
    results["(b) random-init ResNet-18 GAP"] = rank(
        embed(net, q), embed(net, g), ds.query, ds.gallery
    )
    if args.train_seconds > 0:
        net = train_net(ds, data_cfg, args.train_seconds, args.seed, args.train_arch)
        results[f"(d) {args.train_arch} trained {args.train_seconds:.0f} s"] = rank(
            embed(net, q), embed(net, g), ds.query, ds.gallery
        )
    for name, (m, r1) in sorted(results.items()):
        print(f"  {name:<34} mAP {m:.3f}  rank-1 {r1:.3f}")


if __name__ == "__main__":
    main()
