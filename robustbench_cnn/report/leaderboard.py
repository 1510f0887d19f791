"""The headline numbers of a run: one row per model variant (model x format x runtime x compression).

RobustBench ranks models by their worst-case robust accuracy at one threat model, one leaderboard per
threat model; here the headline budgets are the suite's ``[[threat_models]]`` (recorded in the
manifest with the rule that chose them: declared, else the eps of the suite's adversarial training,
else the middle evaluated Linf eps). The robust number is the per-example worst case over every
attack at that budget (``attack = worst_case``) where the run has it, else the minimum over the
attacks' accuracies (an upper bound on the worst case, marked ``min``, ranked after every worst case).
A randomized model's number comes from attacks through EOT (``randomized`` = 1), and says so.
Certified accuracy is read at the *main radius*: the largest evaluated L2 radius that randomized
smoothing can certify at all with the run's sample size (Cohen et al. 2019: with ``n`` samples the
Clopper-Pearson lower bound never exceeds ``alpha^(1/n)``, so no radius beyond
``sigma * PhiInv(alpha^(1/n))`` is certifiable).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from scipy.stats import norm as normal

from robustbench_cnn.contract.verdicts import variant_verdict, verdict_reasons

VARIANT = ["model", "arch", "defense", "compression", "format", "runtime"]
KEY = ["model", "compression", "format", "runtime"]


@dataclass(frozen=True)
class ThreatModel:
    """Where the leaderboard reads robust and certified accuracy."""

    norm: str | None
    eps: float | None
    radius: float | None
    certifiable: float | None  # the largest certifiable radius of the run's smoothed models
    rule: str = ""  # what chose (norm, eps): "declared in the suite", ...

    def robust_header(self) -> str:
        return f"robust {self.norm} @{self.eps:.4g}" if self.eps is not None else "robust"

    def certified_header(self) -> str:
        return f"certified l2 @{self.radius:.4g}" if self.radius is not None else "certified"


def variant_label(r: pd.Series | dict[str, Any]) -> str:
    """``model / compression / format / runtime`` without the defaults (``none``, ``torch``)."""
    extra = [str(r[c]) for c in ("compression", "format", "runtime") if r[c] not in ("none", "torch")]
    return " / ".join([str(r["model"]), *extra])


def certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """``sigma * PhiInv(alpha^(1/n))``: the largest L2 radius CERTIFY can return with ``n`` samples."""
    return sigma * float(normal.ppf(alpha ** (1.0 / n)))


def certify_limits(manifest: Mapping[str, Any]) -> dict[str, float]:
    """Per model with certification stats in the manifest: its largest certifiable radius."""
    out = {}
    for name, info in manifest.get("models", {}).items():
        stats = info.get("certify") or {}
        if all(k in stats for k in ("sigma", "n", "alpha")):
            out[name] = certifiable_radius(float(stats["sigma"]), int(stats["n"]), float(stats["alpha"]))
    return out


def headline_budgets(df: pd.DataFrame, manifest: Mapping[str, Any]) -> list[tuple[str, float, str]]:
    """``(norm, eps, rule)`` of each headline threat model: the manifest's (the suite's declaration or
    its default rule, see ``SuiteSpec.headline``); for a manifest older than that, the middle
    evaluated Linf eps of the table (else of any norm)."""
    declared = manifest.get("threat_models") or []
    if declared:
        return [(str(t["norm"]), float(t["eps"]), str(t.get("rule", ""))) for t in declared]
    robust = df[(df.metric == "robust_acc") & df.eps.notna() & (df.eps > 0)]
    if robust.empty:
        return []
    pool = robust[robust.norm == "linf"] if (robust.norm == "linf").any() else robust
    norm = str(pool.norm.iloc[0])
    eps = sorted({float(e) for e in pool.loc[pool.norm == norm, "eps"]})
    return [(norm, eps[(len(eps) - 1) // 2], f"the middle evaluated {norm} eps (the run names no threat model)")]


def threat_models(df: pd.DataFrame, manifest: Mapping[str, Any]) -> list[ThreatModel]:
    """One :class:`ThreatModel` per headline budget (at least one; without robust rows, eps None)."""
    limits = certify_limits(manifest)
    limit = max(limits.values()) if limits else None
    radii = sorted(float(r) for r in df.loc[(df.metric == "certified_acc") & (df.eps > 0), "eps"].unique())
    radius = None
    if radii:
        inside = [r for r in radii if limit is None or r <= limit]
        radius = inside[-1] if inside else radii[0]
    heads = headline_budgets(df, manifest)
    if not heads:
        return [ThreatModel(None, None, radius, limit)]
    return [ThreatModel(norm, eps, radius, limit, rule) for norm, eps, rule in heads]


def threat_model(df: pd.DataFrame, manifest: Mapping[str, Any]) -> ThreatModel:
    """The first headline threat model (the one plots, Pareto fronts and the dashboard use)."""
    return threat_models(df, manifest)[0]


Interval = tuple[float | None, float | None]  # a row's 95% interval (ci_low, ci_high), None where it has none
NO_INTERVAL: Interval = (None, None)


def interval_of(row: pd.Series) -> Interval:
    """A results row's (ci_low, ci_high), (None, None) where it carries none."""
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high) or low == "" or high == "":
        return NO_INTERVAL
    return float(low), float(high)


def _robust(rows: pd.DataFrame, tm: ThreatModel) -> tuple[float | None, str, Interval]:
    """The headline robust accuracy, how it was read, and the interval of the row it was read from."""
    at = rows[(rows.metric == "robust_acc") & (rows.norm == tm.norm) & (rows.eps == tm.eps)]
    worst = at[at.attack == "worst_case"]
    if not worst.empty:
        return float(worst.value.iloc[0]), "worst_case", interval_of(worst.iloc[0])
    if not at.empty:
        low = at.loc[at.value.idxmin()]
        return float(low.value), "min", interval_of(low)
    return None, "", NO_INTERVAL


def _one_ci(rows: pd.DataFrame, metric: str, **where: Any) -> tuple[float | None, Interval]:
    sub = rows[rows.metric == metric]
    for col, val in where.items():
        sub = sub[sub[col] == val]
    return (float(sub.value.iloc[0]), interval_of(sub.iloc[0])) if not sub.empty else (None, NO_INTERVAL)


def _one(rows: pd.DataFrame, metric: str, **where: Any) -> float | None:
    return _one_ci(rows, metric, **where)[0]


def ranked(board: pd.DataFrame) -> pd.DataFrame:
    """RobustBench's order: robust accuracy, then clean, best first; an upper bound (``robust_kind``
    ``min``: no per-example worst case) after every worst case; variants whose evaluation is UNRELIABLE
    (a failed sanity check) after every reliable one, whatever their numbers."""
    order = board.assign(_u=board.verdict.str.startswith("UNRELIABLE"), _b=board.robust_kind == "min")
    order = order.sort_values(["_u", "_b", "robust", "clean"], ascending=[True, True, False, False],
                              na_position="last")  # fmt: skip
    return order.drop(columns=["_u", "_b"]).reset_index(drop=True)


def leaderboard(df: pd.DataFrame, manifest: Mapping[str, Any],
                tm: ThreatModel | None = None) -> tuple[pd.DataFrame, ThreatModel]:  # fmt: skip
    """One row per variant at threat model ``tm`` (default: the first headline): verdict, clean, robust
    (and how), certified, size (bytes), p50 latency (ms); the accuracies' 95% intervals as
    ``<name>_ci`` (``(low, high)``, ``(None, None)`` without)."""
    tm = tm if tm is not None else threat_model(df, manifest)
    reasons = verdict_reasons(df)
    no_eot = set(df.loc[(df.metric == "check_eot") & (df.value < 1), "model"])
    randomized = set(df.loc[(df.metric == "randomized") & (df.value >= 1), "model"]) - no_eot  # attacked with EOT
    keyed = df.fillna({c: "" for c in VARIANT})
    bs = keyed.loc[keyed.metric == "latency_ms_p50", "batch_size"].dropna()
    batch = int(bs.min()) if not bs.empty else None
    reference = _corruption_errors(keyed, corruption_reference(manifest))
    out = []
    for key, rows in keyed.groupby(VARIANT, sort=False):
        r = dict(zip(VARIANT, key, strict=True))
        robust, how, robust_ci = _robust(rows, tm)
        judged = variant_verdict(reasons.get(r["model"]), rows)
        clean, clean_ci = _one_ci(rows, "clean_acc")
        certified, certified_ci = _one_ci(rows, "certified_acc", eps=tm.radius) if tm.radius is not None else (
            None, NO_INTERVAL)  # fmt: skip
        out.append({**r, "variant": variant_label(r), "verdict": judged,
                    "clean": clean, "robust": robust, "robust_kind": how, "eot": r["model"] in randomized,
                    "certified": certified,
                    "clean_ci": clean_ci, "robust_ci": robust_ci, "certified_ci": certified_ci,
                    "size_bytes": _one(rows, "size_bytes"),
                    "p50_ms": _one(rows, "latency_ms_p50", batch_size=batch) if batch is not None else None,
                    "latency_batch": batch, "corruption": _one(rows, "mean_corruption_acc"),
                    "mce": mce(_corruption_errors(rows), reference)})  # fmt: skip
    cols = [*VARIANT, "variant", "verdict", "clean", "robust", "robust_kind", "eot", "certified", "size_bytes",
            "p50_ms", "latency_batch", "clean_ci", "robust_ci", "certified_ci", "corruption", "mce"]  # fmt: skip
    return pd.DataFrame(out, columns=cols), tm


def corruption_reference(manifest: Mapping[str, Any]) -> str | None:
    """The model a run's mCE is relative to (``corruptions.reference``), as its corruption cells recorded."""
    for info in (manifest.get("models") or {}).values():
        ref = (info.get("corruptions") or {}).get("reference") if isinstance(info, dict) else None
        if ref:
            return str(ref)
    return None


def _corruption_errors(rows: pd.DataFrame, model: str | None = None) -> pd.Series | None:
    """Error (1 - accuracy) per (corruption, severity) of a variant's rows, or of ``model``'s torch form."""
    if model is not None:
        rows = rows[(rows.model == model) & (rows.format.isin(["", "torch"]))]
    errors = rows[rows.metric == "corruption_acc"]
    return None if errors.empty else 1 - errors.set_index(["attack", "eps"]).value.astype(float)


def mce(errors: pd.Series | None, reference: pd.Series | None) -> float | None:
    """Mean corruption error relative to the reference (Hendrycks & Dietterich 2019): per corruption
    CE_c = sum over severities of the error / the reference's, averaged over the corruptions both have
    (a corruption the reference never gets wrong is left out); ``None`` without both."""
    if errors is None or reference is None:
        return None
    ratios = []
    for corruption, own in errors.groupby(level=0):
        ref = reference.xs(corruption, level=0) if corruption in reference.index.get_level_values(0) else None
        if ref is not None and float(ref.sum()) > 0:
            ratios.append(float(own.sum()) / float(ref.sum()))
    return sum(ratios) / len(ratios) if ratios else None


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not dominated by another with lower-or-equal ``x`` and higher-or-equal ``y``."""
    ordered = points.sort_values([x, y], ascending=[True, False])
    best, keep = -float("inf"), []
    for idx, r in ordered.iterrows():
        if r[y] > best:
            keep.append(idx)
            best = r[y]
    return ordered.loc[keep]
