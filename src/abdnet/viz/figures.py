"""The four figures of ``abdnet viz`` on trained models and a data set.

Each ``*_figure`` function takes loaded models (``VizModel``, one or more to compare side by
side), a ``ReIDDataset`` and an output PNG path, draws the figure and returns the numbers
behind it as a JSON-ready dict. Image choices are drawn from ``numpy.random.default_rng(seed)``
so a seed gives the same figure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from abdnet.config import Config
from abdnet.data import build_test_transform
from abdnet.engine import ModelEmbedder, device_of
from abdnet.evaluation import is_junk, pairwise_distance
from abdnet.layout import BEST, CHECKPOINTS_DIR, LAST, MODEL_FILE
from abdnet.models import load_model
from abdnet.viz.correlation import (
    CorrelationStats,
    batch_correlation_stats,
    correlation_stats,
    plot_correlation,
)
from abdnet.viz.gradcam import grad_cam, overlay_heatmap, ranking_score, upsample_maps
from abdnet.viz.ranks import plot_ranks, rank_query
from abdnet.viz.taps import FeatureTap, attention_taps, capture_taps, default_taps, map_tap
from abdnet.viz.tsne import choose_identities, plot_tsne, tsne_layout

__all__ = [
    "VizModel",
    "load_viz_model",
    "choose_records",
    "attention_figure",
    "correlation_figure",
    "tsne_figure",
    "ranks_figure",
]

log = logging.getLogger(__name__)


@dataclass
class VizModel:
    label: str
    model: nn.Module
    config: Config  # its data section gives the input size and normalization


def load_viz_model(
    path: str | Path, *, label: str | None = None, device: str | torch.device = "cpu"
) -> VizModel:
    """A run folder, checkpoint folder, ``.safetensors`` or official ``.pth.tar``, in eval mode."""
    loaded = load_model(path)
    p = Path(path)
    if label is None:
        # "runs/abd" for a run folder, "abd" for runs/abd.safetensors; "best"/"last" say little.
        label = p.name.removesuffix(".safetensors").removesuffix(".pth.tar")
        if label in (BEST, LAST, Path(MODEL_FILE).stem, CHECKPOINTS_DIR):
            label = str(p)
    return VizModel(label=label, model=loaded.model.to(device).eval(), config=loaded.config)


def choose_records(records: Sequence, num: int, seed: int) -> list:
    """``num`` records drawn without replacement by ``seed`` (all when fewer), in their order."""
    if num <= 0:
        raise ValueError(f"need at least one image, got {num}")
    if num >= len(records):
        return list(records)
    idx = np.sort(np.random.default_rng(seed).choice(len(records), size=num, replace=False))
    return [records[i] for i in idx]


def _batch(dataset, records: Sequence, vm: VizModel) -> tuple[torch.Tensor, np.ndarray]:
    """Network input ``(B, 3, H, W)`` and display images ``(B, H, W, 3)`` uint8 at input size."""
    transform = build_test_transform(vm.config.data)
    size = (vm.config.data.width, vm.config.data.height)
    tensors, shown = [], []
    for r in records:
        img = dataset.read_image(r)
        tensors.append(transform(img))
        shown.append(np.asarray(img.resize(size)))
    return torch.stack(tensors).to(device_of(vm.model)), np.stack(shown)


def _embed(vm: VizModel, dataset, records: Sequence, batch_size: int = 64) -> torch.Tensor:
    """Raw embeddings (what the RAM score differentiates and the evaluation ranks), in the
    evaluation precision."""
    embedder = ModelEmbedder(
        vm.model,
        config=vm.config,
        device=device_of(vm.model),
        batch_size=batch_size,
        normalize=False,
        precision=vm.config.eval.precision,
    )
    return embedder([dataset.read_image(r) for r in records])


def _distances(vm: VizModel, qf: torch.Tensor, gf: torch.Tensor) -> np.ndarray:
    """Distances as the model's evaluation config computes them (squared Euclidean or cosine)."""
    if vm.config.eval.normalize:
        qf, gf = nn.functional.normalize(qf, dim=1), nn.functional.normalize(gf, dim=1)
    return pairwise_distance(qf, gf, vm.config.eval.metric).clamp_min(0).numpy()


def _gallery(dataset) -> list:
    # junk images (pid -1) are left out of the gallery, as the evaluation does
    return [r for r in dataset.gallery if not is_junk(r.pid)]


def _distractor_pids(dataset) -> frozenset[int]:
    # Market-1501 labels its distractor images (people outside the test set) 0.
    return frozenset({0}) if "market" in str(getattr(dataset, "name", "")).lower() else frozenset()


def _pick_tap(vm: VizModel, tap: str | None, layer: str | None) -> tuple[str, FeatureTap]:
    if layer:
        return layer, map_tap(layer)
    taps = default_taps()
    key = tap or next(iter(taps))
    if key not in taps:
        raise ValueError(f"--tap: {key!r} is not one of {sorted(taps)} for {vm.label}")
    return key, taps[key]


# ---------------------------------------------------------------------------------------
# attention (Fig. 1 / 5)


def _sum_target_logits(out, target: torch.Tensor) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    if not logits:
        raise ValueError("the model returned no logits: Grad-CAM needs a classifier")
    rows = torch.arange(target.shape[0], device=target.device)
    # Each classifier reads one branch, so for a branch's map this is that branch's logit.
    return sum(lg[rows, target] for lg in logits)


def attention_figure(
    models: Sequence[VizModel],
    dataset,
    out_path: str | Path,
    *,
    num_images: int = 4,
    seed: int = 0,
    tap: str | None = None,
    layer: str | None = None,
    raw: bool = False,
) -> dict:
    """Grad-CAM (predicted class) and RAM (top-1 gallery match) overlays per query image and
    model; with ``raw`` also the channel-mean responses of Ta / CAM / PAM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = choose_records(dataset.query, num_images, seed)
    gallery = _gallery(dataset)
    columns: list[tuple[str, list[np.ndarray]]] = []  # (title, per-image overlay)
    numbers: dict = {
        "images": [{"path": r.path, "pid": r.pid, "camid": r.camid} for r in queries],
        "models": [],
    }
    shown_ref = None
    tap_names: list[str] = []
    for vm in models:
        key, ftap = _pick_tap(vm, tap, layer)
        images, shown = _batch(dataset, queries, vm)
        if shown_ref is None:
            shown_ref = shown
        size = shown_ref.shape[1:3]
        # Grad-CAM on the predicted class (test identities have no class of their own).
        vm.model.eval()
        with torch.no_grad():
            logits = vm.model(images).logits
        pred = torch.stack(list(logits)).sum(0).argmax(1)  # (B,)
        cap = capture_taps(
            vm.model, images, {key: ftap}, lambda o, p=pred: _sum_target_logits(o, p)
        )
        gc = grad_cam(cap.maps[key], cap.gradients[key])  # (B, h, w)
        # RAM: score = -||f(q) - f(g_top1)||^2 with the protocol's top-1 gallery match.
        qf = _embed(vm, dataset, queries)
        gf = _embed(vm, dataset, gallery)
        dist = _distances(vm, qf, gf)
        g_pids = np.array([r.pid for r in gallery])
        g_cams = np.array([r.camid for r in gallery])
        top = []
        for i, q in enumerate(queries):
            e = rank_query(dist[i], q.pid, q.camid, g_pids, g_cams, k=1, show_junk=False).entries
            top.append(e[0])
        target = gf[[t.index for t in top]].to(images.device)
        rcap = capture_taps(
            vm.model, images, {key: ftap}, lambda o, t=target: ranking_score(o.embedding, t)
        )
        ram = grad_cam(rcap.maps[key], rcap.gradients[key])
        tap_names.append(f"{vm.label}: {ftap.label}")
        columns.append((f"{vm.label}\nGrad-CAM", _overlays(shown_ref, gc, size)))
        columns.append((f"{vm.label}\nRAM", _overlays(shown_ref, ram, size)))
        entry = {
            "label": vm.label,
            "tap": ftap.label,
            "predicted_class": pred.tolist(),
            "top1": [
                {
                    "gallery": t.index,
                    "pid": t.pid,
                    "camid": t.camid,
                    "distance": t.distance,
                    "correct": t.pid == q.pid,
                }
                for t, q in zip(top, queries)
            ],
            "gradcam": np.round(gc.cpu().numpy(), 5).tolist(),
            "ram": np.round(ram.cpu().numpy(), 5).tolist(),
        }
        if raw:
            raw_taps = attention_taps(cap.output.features)
            rc = capture_taps(vm.model, images, raw_taps)
            entry["raw"] = {}
            for name, fmap in rc.maps.items():
                resp = fmap.float().mean(dim=1)  # (B, h, w) channel-mean response
                lo = resp.flatten(1).amin(1)[:, None, None]
                hi = resp.flatten(1).amax(1)[:, None, None]
                resp = (resp - lo) / (hi - lo).clamp_min(1e-12)
                columns.append((f"{vm.label}\nraw {name}", _overlays(shown_ref, resp, size)))
                entry["raw"][name] = np.round(resp.cpu().numpy(), 5).tolist()
        numbers["models"].append(entry)

    n_img, n_col = len(queries), 1 + len(columns)
    fig, axes = plt.subplots(
        n_img, n_col, figsize=(1.9 * n_col + 1.0, 3.3 * n_img + 0.6), squeeze=False
    )
    for i, q in enumerate(queries):
        axes[i, 0].imshow(shown_ref[i])
        axes[i, 0].set_title(f"query id {q.pid} cam {q.camid}", fontsize=7)
        for c, (title, ims) in enumerate(columns, start=1):
            axes[i, c].imshow(ims[i])
            if i == 0:
                axes[i, c].set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap="jet")
    fig.colorbar(
        mappable, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01, label="normalized activation"
    )
    fig.suptitle(
        "Grad-CAM [73] (predicted class) and ranking activation map RAM [74] (top-1 gallery match)"
        + ("; raw = channel mean of the module output" if raw else "")
        + "\n"
        + "; ".join(tap_names),
        fontsize=8,
    )
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return numbers


def _overlays(shown: np.ndarray, maps: torch.Tensor, size: tuple[int, int]) -> list[np.ndarray]:
    up = upsample_maps(maps.float().cpu(), size)  # (B, H, W)
    return [overlay_heatmap(shown[i], up[i]) for i in range(len(up))]


# ---------------------------------------------------------------------------------------
# correlation (Fig. 6 / 7)


def correlation_figure(
    models: Sequence[VizModel],
    dataset,
    out_path: str | Path,
    *,
    num_images: int = 16,
    image_index: int = 0,
    seed: int = 0,
    tap: str | None = None,
    layer: str | None = None,
) -> dict:
    """|Corr| of the map before GAP for one image (the paper's view) and averaged over
    ``num_images`` query images, per model."""
    records = choose_records(dataset.query, num_images, seed)
    if not 0 <= image_index < len(records):
        raise ValueError(f"--image {image_index}: expected 0..{len(records) - 1}")
    panels: list[tuple[str, CorrelationStats]] = []
    numbers: dict = {"images": [r.path for r in records], "image_index": image_index, "models": []}
    for vm in models:
        key, ftap = _pick_tap(vm, tap, layer)
        images, _ = _batch(dataset, records, vm)
        cap = capture_taps(vm.model.eval(), images, {key: ftap})
        fmap = cap.maps[key].float()  # (B, C, H, W)
        single = correlation_stats(fmap[image_index])
        batch = batch_correlation_stats(fmap)
        panels.append((f"{vm.label}: image {image_index}", single))
        panels.append((f"{vm.label}: {len(records)} images", batch))
        big = fmap.shape[1] > 256  # keep the JSON small: full matrices only for small C
        s_js, b_js = single.to_json(), batch.to_json()
        if big:
            s_js.pop("matrix")
            b_js.pop("matrix")
        numbers["models"].append(
            {
                "label": vm.label,
                "tap": ftap.label,
                "shape": list(fmap.shape[1:]),
                "single": s_js,
                "batch": b_js,
            }
        )
    plot_correlation(panels, str(out_path))
    return numbers


# ---------------------------------------------------------------------------------------
# t-SNE (Fig. 8)


def tsne_figure(
    models: Sequence[VizModel],
    dataset,
    out_path: str | Path,
    *,
    num_ids: int = 10,
    per_id: int = 0,
    seed: int = 0,
    perplexity: float | None = None,
) -> dict:
    """t-SNE of the query + gallery embeddings of ``num_ids`` test identities (by ``seed``);
    ``per_id`` > 0 caps the images per identity."""
    distractors = _distractor_pids(dataset)
    pool = [r for r in list(dataset.query) + _gallery(dataset) if r.pid not in distractors]
    ids = choose_identities(
        [r.pid for r in dataset.query if not is_junk(r.pid) and r.pid not in distractors],
        num_ids,
        seed,
    )
    records = [r for r in pool if r.pid in set(ids)]
    if per_id > 0:
        rng = np.random.default_rng(seed)
        kept = []
        for pid in ids:
            mine = [r for r in records if r.pid == pid]
            if len(mine) > per_id:
                mine = [mine[i] for i in np.sort(rng.choice(len(mine), per_id, replace=False))]
            kept.extend(mine)
        records = kept
    pids = np.array([r.pid for r in records])
    cams = np.array([r.camid for r in records])
    panels, numbers = [], {"ids": ids, "images": [r.path for r in records], "models": []}
    for vm in models:
        feats = _embed(vm, dataset, records).numpy()
        lay = tsne_layout(feats, pids, cams, seed=seed, perplexity=perplexity)
        panels.append((vm.label, lay))
        numbers["models"].append({"label": vm.label, **lay.to_json()})
    plot_tsne(
        panels, str(out_path), title=f"t-SNE of embeddings, {len(ids)} identities (seed {seed})"
    )
    return numbers


# ---------------------------------------------------------------------------------------
# ranked lists (Fig. 9)


def ranks_figure(
    models: Sequence[VizModel],
    dataset,
    out_path: str | Path,
    *,
    num_queries: int = 4,
    k: int = 5,
    seed: int = 0,
) -> dict:
    """Top-``k`` gallery images for ``num_queries`` queries (one row per query and model)."""
    queries = choose_records(dataset.query, num_queries, seed)
    gallery = _gallery(dataset)
    g_pids = np.array([r.pid for r in gallery])
    g_cams = np.array([r.camid for r in gallery])
    rows, labels, numbers = [], [], {"models": []}
    per_model = []
    for vm in models:
        dist = _distances(vm, _embed(vm, dataset, queries), _embed(vm, dataset, gallery))
        ranked = [
            rank_query(
                dist[i],
                q.pid,
                q.camid,
                g_pids,
                g_cams,
                k=k,
                query_index=i,
                distractor_pids=_distractor_pids(dataset),
            )
            for i, q in enumerate(queries)
        ]
        per_model.append(ranked)
        numbers["models"].append({"label": vm.label, "queries": [r.to_json() for r in ranked]})
    for i in range(len(queries)):
        for vm, ranked in zip(models, per_model):
            rows.append(ranked[i])
            labels.append(vm.label)
    size = (models[0].config.data.width, models[0].config.data.height)

    def q_img(i: int) -> np.ndarray:
        return np.asarray(dataset.read_image(queries[i]).resize(size))

    def g_img(i: int) -> np.ndarray:
        return np.asarray(dataset.read_image(gallery[i]).resize(size))

    plot_ranks(
        rows, q_img, g_img, str(out_path), title=f"Top-{k} gallery images", row_labels=labels
    )
    numbers["queries"] = [{"path": q.path, "pid": q.pid, "camid": q.camid} for q in queries]
    numbers["gallery_paths"] = sorted({gallery[e.index].path for r in rows for e in r.entries})
    return numbers
