"""Which ``check_*`` rows decide a model's verdict.

Every check row does, except a ``check_more_steps`` (an attack's own, or the sanity checks' PGD) at a
budget where the model's worst case (the headline) was judged converged (``check_headline_converged``
= 1 at that norm and eps):
there the attack not converging says something about that attack's row, not about the number the
model is ranked by, and it is shown as a note (the manifest's ``superseded`` field) instead.
"""

from __future__ import annotations

import pandas as pd


def superseded(df: pd.DataFrame) -> pd.Series:
    """Per row of ``df`` (a results table; ``eps`` numbers or their text): a ``check_more_steps`` (an
    attack's own, or the checks' PGD at checks.eps) at a budget where the model's worst case converged."""
    budgets = list(zip(df.model, df.norm, pd.to_numeric(df.eps, errors="coerce").fillna(-1).round(12), strict=True))
    head = (df.metric == "check_headline_converged") & (pd.to_numeric(df.value) >= 1)
    converged = {b for b, h in zip(budgets, head, strict=True) if h}
    return (df.metric == "check_more_steps") & pd.Series([b in converged for b in budgets], index=df.index, dtype=bool)


def deciding(df: pd.DataFrame) -> pd.DataFrame:
    """The check rows of ``df`` that count toward a verdict (see the module docstring)."""
    checks = df[df.metric.str.startswith("check_")]
    return checks[~superseded(checks)]


def failing(fact: dict) -> bool:
    """A manifest check entry that makes the evaluation unreliable: failed and not superseded."""
    return not fact.get("passed", True) and not fact.get("superseded")


def notes(checks: dict) -> dict[str, str]:
    """``{check: note}`` of the failed checks that the converged headline superseded."""
    return {name: f"{r.get('detail', '')}; {r['superseded']}" for name, r in checks.items()
            if not r.get("passed", True) and r.get("superseded")}  # fmt: skip
