"""Which ``check_*`` rows decide a model's verdict.

Every check row does, except a ``check_more_steps`` (an attack's own, or the sanity checks' PGD) at a
budget where the model's worst case (the headline) was judged converged (``check_headline_converged``
= 1 at that norm and eps):
there the attack not converging says something about that attack's row, not about the number the
model is ranked by, and it is shown as a note (the manifest's ``superseded`` field) instead.
"""

from __future__ import annotations

import pandas as pd


def deciding(df: pd.DataFrame) -> pd.DataFrame:
    """The check rows of ``df`` that count toward a verdict (see the module docstring)."""
    checks = df[df.metric.str.startswith("check_")]
    head = checks[(checks.metric == "check_headline_converged") & (checks.value >= 1)]
    converged = {(m, n, round(float(e), 12)) for m, n, e in zip(head.model, head.norm, head.eps, strict=True)}
    if not converged:
        return checks
    attack_level = checks.metric == "check_more_steps"  # an attack's own, or the checks' PGD at checks.eps
    keys = zip(checks.model, checks.norm, pd.to_numeric(checks.eps, errors="coerce").fillna(-1), strict=True)
    superseded = attack_level & pd.Series([(m, n, round(float(e), 12)) in converged for m, n, e in keys],
                                          index=checks.index)  # fmt: skip
    return checks[~superseded]


def failing(fact: dict) -> bool:
    """A manifest check entry that makes the evaluation unreliable: failed and not superseded."""
    return not fact.get("passed", True) and not fact.get("superseded")


def notes(checks: dict) -> dict[str, str]:
    """``{check: note}`` of the failed checks that the converged headline superseded."""
    return {name: f"{r.get('detail', '')}; {r['superseded']}" for name, r in checks.items()
            if not r.get("passed", True) and r.get("superseded")}  # fmt: skip
