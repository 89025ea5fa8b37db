"""Table 1 of the paper: the ablation variants as configs, trained over seeds and tabulated.

Each row of Table 1 is a ``Variant``: a name, the paper's label, and the model/loss values
it sets over a base config (whose data, optimizer, schedule and remaining model values --
backbone, sizes, dropout -- are kept). ``variants`` is the one source of those values; the
YAML files under ``configs/ablation/`` must agree with it (``tests/test_ablation.py``
checks).

Decisions where the paper leaves room:

* baseline (XE): the ``baseline`` preset -- ResNet with two branches built from duplicated
  res_conv_5 (Table 1 footnote), cross-entropy only (``beta_tr = 0``), no attention, no
  O.F./O.W.; dropout and the base config's augmentation stay on.
* "+ CAM" puts CAM in both places ABD-Net uses it (Table 1 footnote (1)): the shallow CAM
  after res_conv_2 and the CAM of the attentive branch. "+ PAM" adds only the attentive
  branch's PAM, "+ PAM + CAM" all three modules.
* "+ O.F." regularizes the feature maps that exist in the no-attention network: the
  res_conv_2 output ("shallow") and Ta ("reduction"); ABD-Net adds the CAM and PAM outputs.
  "+ O.W." regularizes all conv weights (``ow_scope = "all"``, the paper's choice) unless
  the base config asks for ``"stem"``.
* ABD-Net (full eq. 6) keeps the base config's ``beta_tr`` (0.1 when the base has 0); all
  other rows are "(XE)" and set ``beta_tr = 0``.

Seeds: on small data one run per row is noise. Each variant is trained ``seeds`` times with
``train.seed`` = the base config's seed + 0, 1, ..., each in its own run folder
``DIR/<variant>/seed-<S>/`` (resumable on its own); the tables give, per metric, the mean
and the sample standard deviation (n - 1 in the denominator) over the seeds, and each row's
difference to the reference row (the baseline) with its standard error.

Modules: ``variants`` (the rows), ``results`` (one run's ``VariantResult``), ``runner``
(training over seeds, resuming), ``stats`` (mean, std, differences), ``report`` (tables, chart).
"""

from abdnet.ablation.report import write_tables
from abdnet.ablation.results import (
    METRIC_NAMES,
    RESULT_FILE,
    TIME_NAME,
    VariantResult,
    read_result,
)
from abdnet.ablation.runner import run_ablation, run_folder, run_seeds
from abdnet.ablation.stats import (
    NOISE_SE,
    REFERENCE,
    Difference,
    MetricSummary,
    VariantSummary,
    reference_row,
    summarize,
)
from abdnet.ablation.variants import (
    EXTRA_VARIANTS,
    TABLE1_VARIANTS,
    VARIANTS,
    PaperRow,
    Variant,
    resolve_variants,
    variant_config,
    variant_overrides,
)

__all__ = [
    "Variant",
    "PaperRow",
    "VariantResult",
    "MetricSummary",
    "Difference",
    "VariantSummary",
    "VARIANTS",
    "TABLE1_VARIANTS",
    "EXTRA_VARIANTS",
    "METRIC_NAMES",
    "TIME_NAME",
    "NOISE_SE",
    "REFERENCE",
    "RESULT_FILE",
    "variant_overrides",
    "variant_config",
    "resolve_variants",
    "run_seeds",
    "run_folder",
    "run_ablation",
    "read_result",
    "summarize",
    "reference_row",
    "write_tables",
]
