"""A model's verdict: ``reliable``, or ``UNRELIABLE (<the failed checks that decide it>)``.

Which ``check_*`` rows decide a model's verdict:

Every check row does, except a ``check_more_steps`` (an attack's own, or the sanity checks' PGD) at a
budget where the model's worst case (the headline) was judged converged (``check_headline_converged``
= 1 at that norm and eps):
there the attack not converging says something about that attack's row, not about the number the
model is ranked by, and it is shown as a note (the manifest's ``superseded`` field) instead.
"""

from __future__ import annotations

import pandas as pd

from robustbench_cnn.contract.schema import gated

CHECKS = gated("check")  # the check_* metrics: 1 passed, 0 failed


def superseded(df: pd.DataFrame) -> pd.Series:
    """Per row of ``df`` (a results table; ``eps`` numbers or their text): a ``check_more_steps`` (an
    attack's own, or the checks' PGD at checks.eps) at a budget where the model's worst case converged."""
    budgets = list(zip(df.model, df.norm, pd.to_numeric(df.eps, errors="coerce").fillna(-1).round(12), strict=True))
    head = (df.metric == "check_headline_converged") & (pd.to_numeric(df.value) >= 1)
    converged = {b for b, h in zip(budgets, head, strict=True) if h}
    return (df.metric == "check_more_steps") & pd.Series([b in converged for b in budgets], index=df.index, dtype=bool)


def deciding(df: pd.DataFrame) -> pd.DataFrame:
    """The check rows of ``df`` that count toward a verdict (see the module docstring)."""
    checks = df[df.metric.isin(CHECKS)]
    return checks[~superseded(checks)]


def failing(fact: dict) -> bool:
    """A manifest check entry that makes the evaluation unreliable: failed and not superseded."""
    return not fact.get("passed", True) and not fact.get("superseded")


def notes(checks: dict) -> dict[str, str]:
    """``{check: note}`` of the failed checks that the converged headline superseded."""
    return {name: f"{r.get('detail', '')}; {r['superseded']}" for name, r in checks.items()
            if not r.get("passed", True) and r.get("superseded")}  # fmt: skip


def reason(check: pd.Series) -> str:
    """A failed check row as a verdict's reason: ``grad_norm``, ``more_steps pgd linf 0.2``, ``parity``."""
    parts = [str(check.metric).removeprefix("check_")]
    if isinstance(check.get("attack"), str) and check.attack:
        parts.append(str(check.attack))
    if check.metric in ("check_more_steps", "check_headline_converged") and pd.notna(check.get("eps")):
        parts += [str(check.norm), f"{float(check.eps):g}"]
    return " ".join(parts)


def verdict_text(reasons: list[str]) -> str:
    """``reliable``, or ``UNRELIABLE (<the failed checks>)``."""
    return f"UNRELIABLE ({', '.join(reasons)})" if reasons else "reliable"


def verdict_reasons(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per model: the failed checks of its torch form that decide its verdict (``[]``: reliable); an
    export's own ``check_parity`` counts for that export only (:func:`variant_verdict`)."""
    checks = deciding(df)
    checks = checks[checks.format.fillna("torch") == "torch"]
    out: dict[str, list[str]] = {}
    for model, rows in checks.groupby("model", sort=False):
        out[str(model)] = [reason(r) for _, r in rows[rows.value < 1].iterrows()]
    return out


def verdicts(df: pd.DataFrame) -> dict[str, str]:
    """Per model: ``reliable`` or ``UNRELIABLE (<reasons>)`` (see :func:`verdict_reasons`)."""
    return {m: verdict_text(r) for m, r in verdict_reasons(df).items()}


def variant_verdict(model_reasons: list[str] | None, rows: pd.DataFrame) -> str:
    """An export's verdict: its model's reasons plus its own failed checks (e.g. ``check_parity`` = 0);
    ``unchecked`` for a model without check rows."""
    own = rows[rows.metric.isin(CHECKS) & (rows.format.fillna("torch") != "torch")]
    extra = [reason(r) for _, r in own[own.value < 1].iterrows()]
    if model_reasons is None and not extra:
        return "unchecked"
    return verdict_text([*(model_reasons or []), *extra])
