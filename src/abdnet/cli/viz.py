"""``abdnet viz KIND``: the paper's figures (attention, correlation, t-SNE, ranked lists)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from abdnet.cli.options import (
    CHECKPOINT_HELP,
    add_force_option,
    non_negative_int,
    positive_float,
    positive_int,
)

HELP = "draw a figure of section 4.5: attention (Grad-CAM/RAM), correlation, tsne, ranks"

KINDS = ("attention", "correlation", "tsne", "ranks")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, help="which figure")
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN|FILE|URL",
        help=CHECKPOINT_HELP,
    )
    p.add_argument(
        "--data",
        default=None,
        help="data-set root (layout auto-detected, e.g. `abdnet synth` output) or a built-in name "
        "(synthetic, market1501, ...; a named set other than synthetic uses the checkpoint config's "
        "data.root); default: the checkpoint config's data set",
    )
    p.add_argument("--out", required=True, help="output PNG")
    add_force_option(p, "an existing --out file (and OUT.json with --json)")
    p.add_argument(
        "--compare", nargs="+", default=[], metavar="RUN", help="more models drawn side by side"
    )
    p.add_argument("--labels", nargs="+", default=None, help="names of the models in the figure")
    p.add_argument(
        "--json", action="store_true", help="also write the numbers behind the figure to OUT.json"
    )
    p.add_argument("--seed", type=int, default=0, help="chooses images / identities (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--images",
        type=positive_int,
        default=None,
        help="images: attention 4, correlation 16 (default)",
    )
    p.add_argument(
        "--image",
        type=non_negative_int,
        default=0,
        help="correlation: index of the single-image view",
    )
    p.add_argument("--tap", default=None, help="which final map: attentive (default) or global")
    p.add_argument(
        "--layer", default=None, help="any module name whose 4-D output to use instead of --tap"
    )
    p.add_argument(
        "--raw", action="store_true", help="attention: also show raw Ta / CAM / PAM responses"
    )
    p.add_argument(
        "--ids", type=positive_int, default=10, help="tsne: number of identities (default 10)"
    )
    p.add_argument(
        "--per-id",
        type=non_negative_int,
        default=0,
        help="tsne: at most this many images per identity (0: all)",
    )
    p.add_argument(
        "--perplexity",
        type=positive_float,
        default=None,
        help="tsne: perplexity (default min(30, (N-1)/3))",
    )
    p.add_argument(
        "--queries", type=positive_int, default=4, help="ranks: number of queries (default 4)"
    )
    p.add_argument(
        "-k",
        "--top-k",
        type=positive_int,
        default=5,
        help="ranks: gallery images per query (default 5)",
    )


def _open_data(spec: str | None, cfg):
    from abdnet.data import DATASET_NAMES, build_dataset, open_dataset

    if spec is None:
        return build_dataset(cfg.data)
    if spec == "synthetic":
        # The checkpoint's own synthetic set when it was trained on one (same test identities).
        return (
            open_dataset("synthetic", config=cfg.data.synthetic)
            if cfg.data.name == "synthetic"
            else open_dataset(spec)
        )
    if spec in DATASET_NAMES and not Path(spec).exists():
        if not cfg.data.root:
            raise ValueError(
                f"--data {spec}: the checkpoint's config has no data.root; give the data-set root instead"
            )
        return open_dataset(spec, root=cfg.data.root)
    return open_dataset(spec)


def run(args: argparse.Namespace) -> int:
    from abdnet.files import atomic_file, atomic_write, check_output
    from abdnet.viz.figures import load_viz_model

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: expected a .png file")
    check_output(out, force=args.force)  # before any model is loaded
    if args.json:
        check_output(out.with_suffix(".json"), force=args.force)
    paths = [args.checkpoint, *args.compare]
    if args.labels is not None and len(args.labels) != len(paths):
        raise ValueError(f"--labels: {len(args.labels)} names for {len(paths)} models")
    models = [
        load_viz_model(p, label=args.labels[i] if args.labels else None, device=args.device)
        for i, p in enumerate(paths)
    ]
    dataset = _open_data(args.data, models[0].config)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        numbers = _draw(args, models, dataset, tmp)
    print(f"wrote {out}")
    if args.json:
        jpath = out.with_suffix(".json")
        atomic_write(jpath, json.dumps({"kind": args.kind, "seed": args.seed, **numbers}, indent=1))
        print(f"wrote {jpath}")
    return 0


def _draw(args: argparse.Namespace, models, dataset, out: Path) -> dict:
    """Draw the figure ``args.kind`` into ``out``, print its summary, return its numbers."""
    from abdnet.viz.figures import attention_figure, correlation_figure, ranks_figure, tsne_figure

    if args.kind == "attention":
        numbers = attention_figure(
            models,
            dataset,
            out,
            num_images=args.images or 4,
            seed=args.seed,
            tap=args.tap,
            layer=args.layer,
            raw=args.raw,
        )
        for m in numbers["models"]:
            hits = sum(t["correct"] for t in m["top1"])
            print(
                f"{m['label']}: Grad-CAM + RAM on {m['tap']}; top-1 correct for {hits}/{len(m['top1'])} queries"
            )
    elif args.kind == "correlation":
        numbers = correlation_figure(
            models,
            dataset,
            out,
            num_images=args.images or 16,
            image_index=args.image,
            seed=args.seed,
            tap=args.tap,
            layer=args.layer,
        )
        for m in numbers["models"]:
            s, b = m["single"], m["batch"]
            print(
                f"{m['label']}: mean |corr| {s['mean_abs_corr']:.4f} (image {args.image}); "
                f"mean |corr| {b['mean_abs_corr']:.4f} (average over {b['num_images']} images); "
                f"{m['tap']}, C={m['shape'][0]}, {b['constant_channels']} constant channels"
            )
    elif args.kind == "tsne":
        numbers = tsne_figure(
            models,
            dataset,
            out,
            num_ids=args.ids,
            per_id=args.per_id,
            seed=args.seed,
            perplexity=args.perplexity,
        )
        print(f"t-SNE of {len(numbers['images'])} images of identities {numbers['ids']}")
    else:
        numbers = ranks_figure(
            models, dataset, out, num_queries=args.queries, k=args.top_k, seed=args.seed
        )
        for m in numbers["models"]:
            top1 = sum(
                1
                for q in m["queries"]
                if any(e["rank"] == 1 and e["status"] == "match" for e in q["entries"])
            )
            print(f"{m['label']}: top-1 correct for {top1}/{len(m['queries'])} queries")
    return numbers
