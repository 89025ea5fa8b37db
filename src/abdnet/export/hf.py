"""A Hugging-Face-style model folder: the weights, the config and a model card.

``export_hf(checkpoint, out)`` writes::

    out/
      model.safetensors   the weights with the resolved Config in their metadata (save_model)
      config.yaml         the same Config, readable (``abdnet train --config`` takes it)
      README.md           the model card: YAML front matter (licence, tags, model-index with
                          the run's test metrics) and sections on the architecture, the
                          training data and recipe, the evaluation, usage, citation, licence

ready for ``hf upload OWNER/REPO out``. ``hf://OWNER/REPO`` then loads ``model.safetensors``
back (:func:`abdnet.hub.resolve_source`), and the local folder itself is a checkpoint folder
for :func:`abdnet.models.load_model`.

The metrics come from the run folder the checkpoint belongs to (``metrics.jsonl``, the
record of the checkpoint's epoch, which the checkpoint's ``meta.json`` names), so the card
reports the evaluation of exactly these weights; a checkpoint outside a run folder (a bare
file, a URL) gets a card without metrics that says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from abdnet.config import Config, dump_config
from abdnet.evaluation import RankResult
from abdnet.files import atomic_directory, check_output
from abdnet.layout import CONFIG_FILE, META_FILE, METRICS_FILE, MODEL_FILE, PRECISION_FILE
from abdnet.models.io import LoadedModel, load_model, save_model

__all__ = ["CONFIG_FILENAME", "CARD_FILENAME", "RunMetrics", "HfExportResult", "export_hf"]

log = logging.getLogger(__name__)

CONFIG_FILENAME = CONFIG_FILE  # the run folder's name for its config: the same file
CARD_FILENAME = "README.md"
# RankResult's metrics with mAP, the model-selection metric, first in the card
_METRIC_NAMES = ("mAP", *(m for m in RankResult.METRIC_NAMES if m != "mAP"))


@dataclass
class RunMetrics:
    """The evaluation a run recorded for the exported checkpoint's epoch."""

    run_dir: Path
    epoch: int | None  # the checkpoint's epoch (1-based); None if unknown
    epochs: int  # epochs the run logged
    test: dict[str, float] = field(default_factory=dict)  # test query/gallery metrics
    val: dict[str, float] = field(default_factory=dict)  # validation split metrics
    precision: str | None = None  # the precision the run trained in


@dataclass
class HfExportResult:
    path: Path
    files: tuple[str, ...]
    feature_dim: int
    metrics: RunMetrics | None  # None: no run folder (no metrics in the card)


def _find_run(weights: Path) -> Path | None:
    # weights: RUN/checkpoints/{best,last}/model.safetensors, or a file inside a run folder.
    for folder in list(weights.parents)[:3]:
        if (folder / METRICS_FILE).is_file():
            return folder
    return None


def run_metrics(weights: Path) -> RunMetrics | None:
    """The metrics the run recorded for the checkpoint ``weights`` belongs to (None if none)."""
    run = _find_run(weights)
    meta_file = weights.parent / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if run is None:
        return None
    records = []
    for n, line in enumerate((run / METRICS_FILE).read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{run / METRICS_FILE}, line {n}: not JSON: {exc}") from None
    epoch = meta.get("epoch")
    if epoch is None and records:
        epoch = records[-1].get("epoch")  # a bare model.safetensors in the run: the last epoch
    record = next((r for r in records if r.get("epoch") == epoch), meta)
    precision = None
    if (run / PRECISION_FILE).is_file():
        precision = json.loads((run / PRECISION_FILE).read_text()).get("precision")
    return RunMetrics(
        run_dir=run,
        epoch=epoch,
        epochs=len(records),
        test={k: float(v) for k, v in record.get("test", {}).items()},
        val={k: float(v) for k, v in record.get("val", {}).items()},
        precision=precision,
    )


def export_hf(
    checkpoint: str | Path | LoadedModel,
    out: str | Path,
    *,
    repo_id: str | None = None,
    license: str = "mit",
    force: bool = False,
) -> HfExportResult:
    """Write the model folder ``out`` (see the module docstring) atomically.

    ``checkpoint`` is anything :func:`abdnet.models.load_model` takes; ``repo_id``
    (``OWNER/REPO``) fills the card's usage examples; ``license`` is the Hub licence id of
    the weights. An existing ``out`` is replaced only with ``force``. The written folder is
    loaded back and compared (weights bit for bit, config) before it takes ``out``'s place.
    """
    out = check_output(out, force=force, folder=True)
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint)
    metrics = run_metrics(loaded.source) if loaded.source is not None else None
    feature_dim = int(getattr(loaded.model, "feature_dim", 0))
    with atomic_directory(out) as tmp:
        save_model(tmp / MODEL_FILE, loaded.model, loaded.config, num_classes=loaded.num_classes)
        (tmp / CONFIG_FILENAME).write_text(dump_config(loaded.config), encoding="utf-8")
        card = model_card(
            loaded.config,
            num_classes=loaded.num_classes,
            feature_dim=feature_dim,
            metrics=metrics,
            repo_id=repo_id,
            license=license,
        )
        (tmp / CARD_FILENAME).write_text(card, encoding="utf-8")
        _check_round_trip(loaded, tmp)
    files = (MODEL_FILE, CONFIG_FILENAME, CARD_FILENAME)
    log.info("wrote %s (%s)", out, ", ".join(files))
    return HfExportResult(path=out, files=files, feature_dim=feature_dim, metrics=metrics)


def _check_round_trip(loaded: LoadedModel, folder: Path) -> None:
    back = load_model(folder)
    if back.config != loaded.config:
        raise ValueError(f"export hf: {folder}: the written config does not read back equal")
    ours, theirs = loaded.model.state_dict(), back.model.state_dict()
    if ours.keys() != theirs.keys() or not all(torch.equal(ours[k].cpu(), theirs[k]) for k in ours):
        raise ValueError(f"export hf: {folder}: the written weights do not read back equal")


# ---------------------------------------------------------------------------------------
# the model card


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _front_matter(cfg: Config, metrics: RunMetrics | None, license: str, name: str) -> str:
    meta: dict[str, Any] = {
        "license": license,
        "library_name": "abdnet",
        "pipeline_tag": "image-feature-extraction",
        "tags": ["person-re-identification", "re-id", "abd-net", "image-retrieval", "pytorch"],
    }
    if metrics and metrics.test:
        meta["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "image-feature-extraction", "name": "Person re-ID"},
                        "dataset": {"name": _dataset_name(cfg), "type": cfg.data.name},
                        "metrics": [
                            {"type": k, "name": k, "value": round(100 * metrics.test[k], 2)}
                            for k in _METRIC_NAMES
                            if k in metrics.test
                        ],
                    }
                ],
            }
        ]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _dataset_name(cfg: Config) -> str:
    data = cfg.data
    if data.name == "synthetic" and not data.root:
        s = data.synthetic
        return f"abdnet synthetic ({s.ids} ids, {s.cams} cameras, seed {s.seed})"
    root = Path(data.root).name if data.root else ""
    return f"{data.name} ({root})" if root else data.name


def _architecture(cfg: Config, num_classes: int, feature_dim: int) -> list[str]:
    m, d = cfg.model, cfg.data
    attention = [
        name for name, on in (("shallow CAM", m.shallow_cam), ("CAM", m.cam), ("PAM", m.pam)) if on
    ]
    lines = [
        f"- Preset `{m.preset}` (architecture `{m.arch}`), backbone `{m.backbone}` "
        f"(initialised from `{m.pretrained}`), last stride {m.last_stride}.",
        f"- Attention modules: {', '.join(attention) or 'none'}; O.F. at "
        f"{', '.join(m.of_positions) or 'nowhere'}; O.W. scope `{m.ow_scope}`.",
    ]
    if m.arch == "abd":
        lines.append(
            f"- Global branch {m.global_dim}-d, attentive branch {m.attentive_dim}-d "
            f"(reduction to {m.reduction_dim} channels, dropout {m.dropout})."
        )
    lines += [
        f"- Embedding: **{feature_dim}-d** raw (not L2-normalised); classifiers over "
        f"{num_classes} training identities (not used at retrieval time).",
        f"- Input: RGB {d.height}x{d.width}, scaled to [0, 1], normalised with mean "
        f"{list(d.mean)} and std {list(d.std)}.",
    ]
    return lines


def _recipe(cfg: Config, metrics: RunMetrics | None) -> list[str]:
    d, loss, o, t = cfg.data, cfg.loss, cfg.optim, cfg.train
    precision = metrics.precision if metrics and metrics.precision else t.precision
    return [
        f"- Data: {_dataset_name(cfg)}; batches of {d.batch_size} images "
        f"({d.batch_size // max(1, d.num_instances)} identities x {d.num_instances}); "
        f"augmentation: flip p={d.flip_p}, random erasing p={d.erasing_p}, translation "
        f"p={d.translate_p}, colour jitter {'on' if d.color_jitter else 'off'}.",
        f"- Schedule: {_epochs(t.frozen_epochs)} with the backbone frozen (cross-entropy + "
        f"triplet), then {_epochs(t.epochs)} of the full objective; {o.optimizer}, lr {o.lr:g}, "
        f"weight decay {o.weight_decay:g}, lr x{o.gamma:g} at step-2 epochs "
        f"{list(o.milestones)}; precision {precision}; seed {t.seed}.",
        f"- Objective (eq. 6): label-smoothed cross-entropy (epsilon {loss.label_smooth}) "
        f"+ {loss.beta_tr:g} x batch-hard triplet (margin {loss.margin}) + {loss.beta_of:g} x "
        f"O.F. + {loss.beta_ow:g} x O.W. (SVDO form `{loss.svdo_form}`, "
        f"{loss.power_iters} power iterations).",
    ]


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _licence(cfg: Config, license: str) -> str:
    text = f"The weights are released under the `{license}` licence."
    if cfg.data.name == "synthetic":
        return text + " They were trained on abdnet's generated synthetic images only."
    return (
        text + f" Models inherit the terms of their training data: check those of "
        f"{_dataset_name(cfg)} before using the weights, commercially in particular."
    )


def _evaluation(cfg: Config, metrics: RunMetrics | None) -> list[str]:
    e = cfg.eval
    protocol = (
        f"{e.metric} distance on {'L2-normalised' if e.normalize else 'raw'} embeddings"
        f"{', flip-averaged' if e.flip else ''}{', re-ranked' if e.rerank else ''}"
        f"{', query expansion' if e.aqe else ''}"
    )
    if metrics is None:
        return [
            "No evaluation was recorded with these weights (they were exported from a "
            "checkpoint outside a run folder). Measure them with "
            "`abdnet eval --checkpoint <this model> --data <data set>`."
        ]
    lines = []
    for split, values in (("test query/gallery", metrics.test), ("validation", metrics.val)):
        if not values:
            continue
        lines += [
            f"{split.capitalize()} of {_dataset_name(cfg)}, epoch {metrics.epoch} of the run "
            f"({protocol}, single query, same-camera matches excluded):",
            "",
            "| " + " | ".join(_METRIC_NAMES) + " |",
            "|" + "---|" * len(_METRIC_NAMES),
            "| "
            + " | ".join(_pct(values[k]) if k in values else "-" for k in _METRIC_NAMES)
            + " |",
            "",
        ]
    if not lines:
        lines.append(
            f"The run recorded no evaluation at epoch {metrics.epoch} (the checkpoint's "
            "epoch); measure it with `abdnet eval --checkpoint <this model>`."
        )
    return lines


_CITATION = """\
@inproceedings{chen2019abdnet,
  title     = {{ABD-Net}: Attentive but Diverse Person Re-Identification},
  author    = {Chen, Tianlong and Ding, Shaojin and Xie, Jingyi and Yuan, Ye and
               Chen, Wuyang and Yang, Yang and Ren, Zhou and Wang, Zhangyang},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  pages     = {8351--8361},
  year      = {2019}
}"""


def model_card(
    cfg: Config,
    *,
    num_classes: int,
    feature_dim: int,
    metrics: RunMetrics | None,
    repo_id: str | None = None,
    license: str = "mit",
) -> str:
    """The ``README.md`` of an exported model folder (Markdown with YAML front matter)."""
    repo = repo_id or "OWNER/REPO"
    name = repo.split("/")[-1]
    head = [
        _front_matter(cfg, metrics, license, name),
        f"# {name}: ABD-Net person re-identification",
        "",
        f"An ABD-Net (*Attentive but Diverse Person Re-Identification*, ICCV 2019) model "
        f"trained with abdnet: it maps a person crop to a {feature_dim}-d embedding; crops "
        "of the same person lie close together.",
        "",
        "## Architecture",
        "",
        *_architecture(cfg, num_classes, feature_dim),
        "",
        "## Training data and recipe",
        "",
        *_recipe(cfg, metrics),
        "",
        f"The full configuration is `{CONFIG_FILENAME}` (also stored in the metadata of "
        f"`{MODEL_FILE}`); `abdnet train --config {CONFIG_FILENAME}` repeats the run.",
        "",
        "## Evaluation",
        "",
        *_evaluation(cfg, metrics),
        "",
        "## Usage",
        "",
        "With abdnet installed:",
        "",
        "```bash",
        f"abdnet eval --checkpoint hf://{repo} --data /path/to/dataset",
        f"abdnet extract --checkpoint hf://{repo} --images crops/ --out feats.npz",
        "```",
        "",
        "```python",
        "from abdnet.retrieval import FeatureExtractor",
        "",
        f'extractor = FeatureExtractor("hf://{repo}", device="cpu")',
        'features = extractor(["person1.jpg", "person2.jpg"])  # (2, D), L2-normalised',
        "```",
        "",
        "The weights are a safetensors file: loading them runs no code.",
        "",
        "## Citation",
        "",
        "```bibtex",
        _CITATION,
        "```",
        "",
        "## Licence",
        "",
        _licence(cfg, license),
        "",
    ]
    return "\n".join(head)
