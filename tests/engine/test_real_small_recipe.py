"""configs/real-small.yaml: the paper's model from scratch, and it trains (synthetic data).

The recipe is tuned on real photos that may not enter the repository or its tests; here it
is only checked to be what it claims (the paper preset with every ABD-Net part on, nothing
downloaded, evaluation options saved with the run) and to run one optimizer step at its own
input size, batch shape and loss weights on a tiny synthetic set.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from abdnet.config import SyntheticConfig, load_config
from abdnet.engine import train
from abdnet.models import load_model

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "real-small.yaml"


def test_recipe_is_the_paper_model_from_scratch():
    c = load_config(CONFIG)
    m = c.model
    assert (m.preset, m.arch, m.pretrained) == ("paper", "abd", "none")
    assert m.shallow_cam and m.cam and m.pam and not m.svd_layer
    assert set(m.of_positions) == {"shallow", "reduction", "cam", "pam"}
    assert m.ow_scope != "none"
    assert c.loss.beta_of > 0 and c.loss.beta_ow > 0 and c.loss.beta_tr > 0
    # close to the photos' own 48 x 128 (W x H): no large up- or down-sampling
    assert 96 <= c.data.height <= 160 and 32 <= c.data.width <= 64
    # the run's config is what `abdnet eval --checkpoint RUN` uses
    assert c.eval.flip and c.eval.normalize
    assert c.eval.rerank and m.pooling == "gem"  # chosen by cross-validation (docs/benchmarks.md)


def test_recipe_trains_one_step_on_synthetic_data(tmp_path):
    c = load_config(CONFIG)
    k = c.data.num_instances
    p = c.data.batch_size // k
    # p training identities with k images each: exactly one P x K batch
    synthetic = SyntheticConfig(
        ids=2 * p, cams=2, per_id=k, height=c.data.height, width=c.data.width, seed=3
    )
    data = dataclasses.replace(c.data, name="synthetic", root="", synthetic=synthetic, workers=0)
    schedule = dataclasses.replace(
        c.train, frozen_epochs=0, epochs=1, of_start_epoch=0, ow_start_epoch=0,
        precision="fp32", device="cpu", eval_every=0,
    )  # fmt: skip
    cfg = dataclasses.replace(c, data=data, train=schedule)
    result = train(cfg, tmp_path / "run")

    record = result.final
    assert record["steps"] == 1 and record["use_of"] and record["use_ow"]
    loss = record["loss"]
    assert all(math.isfinite(v) for v in loss.values())
    assert loss["xent"] > 0 and loss["triplet"] >= 0 and loss["of"] > 0 and loss["ow"] > 0
    assert 0.0 <= result.test["mAP"] <= 1.0
    loaded = load_model(tmp_path / "run")
    assert loaded.config.eval == c.eval and loaded.config.model == c.model
