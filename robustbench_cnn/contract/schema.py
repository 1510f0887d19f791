"""The results contract: the columns of ``results.csv`` and one record per metric (standard library only,
so the torch-free edge validator writes the same schema).

Columns and metric names are a contract other tools build on: extend, never rename. A metric's facts
(its range, which way is better, whether it carries a 95% interval, how ``compare`` judges a change)
live in its :class:`MetricSpec`, registered once here with :func:`register_metric`; readers, the gate and
the report import them instead of keeping their own tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

COLUMNS = (
    "run_id", "suite", "dataset", "model", "arch", "defense", "compression", "format", "runtime",
    "device", "metric", "attack", "norm", "eps", "value", "n",
    # extensions (appended, never reordered): the batch size a latency row was measured at
    "batch_size",
    # extensions: 95% Clopper-Pearson interval of an accuracy row (from value and n)
    "ci_low", "ci_high",
)  # fmt: skip

NUMERIC = ("eps", "value", "n", "batch_size", "ci_low", "ci_high")
MEASURED = ("value", "n", "ci_low", "ci_high")  # what a row measures; every other column says what was measured
ROW_KEY = tuple(c for c in COLUMNS if c not in MEASURED)  # one row per key in a table
IDENTITY = tuple(c for c in ROW_KEY if c != "run_id")  # the same row in two runs

Gate = Literal["accuracy", "check", "latency", "none"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of ``results.csv``.

    ``low``/``high``: the range a value must lie in (checked when a table is read; ``None``: open);
    ``higher_is_better``: the direction of an improvement (``None``: neither, e.g. a count or a flag);
    ``interval``: a fraction of ``n`` images that carries a 95% Clopper-Pearson interval;
    ``gate``: how ``compare`` judges a change (``accuracy``: a drop beyond the tolerance with disjoint
    intervals; ``check``: 1 turning 0; ``latency``: the drift-normalised latency gate; ``none``: shown only).
    """

    name: str
    description: str
    low: float | None = None
    high: float | None = None
    higher_is_better: bool | None = None
    interval: bool = False
    gate: Gate = "none"

    def in_range(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


_SPECS: dict[str, MetricSpec] = {}
METRIC_SPECS: Mapping[str, MetricSpec] = MappingProxyType(_SPECS)


def register_metric(
    name: str,
    description: str,
    *,
    low: float | None = None,
    high: float | None = None,
    higher_is_better: bool | None = None,
    interval: bool = False,
    gate: Gate = "none",
) -> MetricSpec:
    """Add a metric to the contract (a name registered twice is an error: names are never reused)."""
    if name in _SPECS:
        raise ValueError(f"metric '{name}' is already registered")
    spec = MetricSpec(name, description, low, high, higher_is_better, interval, gate)
    _SPECS[name] = spec
    return spec


def _accuracy(name: str, description: str, gate: Gate = "accuracy") -> None:
    register_metric(name, description, low=0.0, high=1.0, higher_is_better=True, interval=True, gate=gate)


def _check(name: str, description: str) -> None:
    register_metric(name, f"1 passed, 0 failed: {description}", low=0.0, high=1.0, higher_is_better=True, gate="check")


def _cost(name: str, description: str, gate: Gate = "none") -> None:
    register_metric(name, description, low=0.0, higher_is_better=False, gate=gate)


_accuracy("clean_acc", "top-1 accuracy on the clean eval images")
_accuracy("robust_acc", "accuracy under an attack at (norm, eps); the worst case per image for attack worst_case")
_accuracy("certified_acc", "randomized smoothing: certified correct at L2 radius eps")
register_metric("macro_f1", "macro-averaged F1 on the clean eval images", low=0.0, high=1.0, higher_is_better=True)
register_metric("ece", "expected calibration error (15 bins)", low=0.0, high=1.0, higher_is_better=False)
_cost("latency_ms_p50", "median wall time of one call at batch_size (ms)", gate="latency")
_cost("latency_ms_p90", "90th percentile of the timed calls (ms)")
_cost("latency_ms_p99", "99th percentile of the timed calls (ms)")
register_metric("throughput", "images per second at batch_size", low=0.0, higher_is_better=True)
_cost("size_bytes", "the size of the weights (bytes)")
_cost("params", "number of parameters")
_cost("macs", "multiply-accumulates of one forward pass")
# extensions: evaluation sanity checks
_check("check_pgd_vs_fgsm", "PGD finds at least as many adversarial examples as FGSM")
_check("check_large_eps", "an unbounded-looking budget (Linf 0.5 by default) drives accuracy to about 0")
_check("check_more_steps", "the attack re-run with more steps and restarts lowers accuracy by at most the tolerance")
_check("check_transfer", "PGD examples crafted on a surrogate model do not beat the white-box attack")
_check("check_grad_norm", "input gradients of the loss do not vanish")
# extensions: pre-flight checks, and whether the model is randomized (1: attacked with EOT)
_check("check_logits", "the model outputs logits, not probabilities")
_check("check_num_classes", "the model outputs one score per class")
register_metric("randomized", "1 when the model is randomized (its output varies between calls on one input)")
# extensions: agreement of an exported model with its torch source on the eval set
register_metric("parity_top1_agreement", "share of eval images where the export and torch agree on top-1",
                low=0.0, high=1.0, higher_is_better=True)  # fmt: skip
_cost("parity_max_abs_logit_diff", "largest absolute logit difference between the export and torch")
# extensions: with performance.attack_precision = "bf16", the clean forward under autocast
_accuracy("clean_acc_bf16", "clean accuracy of the forward under bf16 autocast", gate="none")
register_metric("bf16_agreement", "share of eval images where bf16 and fp32 agree on top-1",
                low=0.0, high=1.0, higher_is_better=True)  # fmt: skip
# extensions: an export's parity verdict (rows kept, marked unreliable), and a GPU export target skipped on
# a machine without a GPU (1; no other rows for that export)
_check("check_parity", "the export agrees with torch within the precision's tolerances")
register_metric("export_skipped", "1 when a GPU export target was skipped on a machine without a GPU")
# extensions: a model's clean or training accuracy under checks.min_clean_acc (undertrained)
_check("check_trained", "clean and training accuracy reach checks.min_clean_acc")
# extensions: the spread of the timed calls behind a latency row
_cost("latency_ms_iqr", "p75 - p25 of the timed calls (ms)")
_cost("latency_ms_std", "standard deviation of the timed calls (ms)")
# extensions: a zoo model's clean accuracy against its published figure (95% interval), and its worst
# case against its published certified lower bound (no correct attack can go below it)
_check("check_published_clean", "clean accuracy agrees with the published figure (95% interval)")
_check("check_certified_bound", "the worst case is not below the published certified lower bound")
# extensions: the worst case at a budget is no higher than any attack's stronger run there (it is then the
# headline's verdict, and an attack's own check_more_steps there is a note, not a verdict)
_check("check_headline_converged", "the worst case at this budget did not move under stronger attacks")
# extensions: a randomized model (randomized = 1) attacked without EOT (checks.eot_samples < 2)
_check("check_eot", "a randomized model is attacked with expectation over transformation")

# extensions: common corruptions (robustbench_cnn.corruptions, regenerated CIFAR-10-C-style): accuracy per
# corruption (column attack) and severity 1..5 (column eps), norm "corruption"; and their mean per model
_accuracy("corruption_acc", "accuracy on the eval images under one corruption (attack) at one severity (eps)")
register_metric("mean_corruption_acc", "mean of a model's corruption_acc rows (every corruption and severity)",
                low=0.0, high=1.0, higher_is_better=True)  # fmt: skip

METRICS = METRIC_SPECS.keys()  # a live view: a plugin's register_metric extends it
# accuracy metrics (fractions of ``n`` images) that carry a Clopper-Pearson interval (the built-in ones)
ACCURACY_METRICS = frozenset(m for m, s in METRIC_SPECS.items() if s.interval)


def gated(gate: Gate) -> frozenset[str]:
    """The metrics ``compare`` judges by ``gate``."""
    return frozenset(m for m, s in METRIC_SPECS.items() if s.gate == gate)
