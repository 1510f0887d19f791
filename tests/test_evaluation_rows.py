"""End to end on the tiny suite: the ensemble and the worst case at every budget, convergence and
pre-flight check rows, and Clopper-Pearson intervals on accuracy rows."""

import json

import pandas as pd

from robustbench_cnn.config.load import load_suite
from robustbench_cnn.contract.schema import ACCURACY_METRICS
from robustbench_cnn.engine.runner import RunOptions, run_suite

EXTRA = """
[[evaluations]]
attack = "pgd"
norm = "l2"
eps = [0.5]
steps = 3

[ensemble]
steps = 5
restarts = 1

[checks]
steps = 3
eval_size = 30
more_steps_factor = 2
more_restarts = 2
"""


def test_ensemble_worst_case_convergence_and_intervals(tmp_path, tiny_suite):
    path = tiny_suite()
    path.write_text(path.read_text() + EXTRA)
    opts = RunOptions(out_root=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    result = run_suite(load_suite(path), opts)
    df = result.table
    robust = df[df.metric == "robust_acc"]
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        at = robust[(robust.norm == norm) & (robust.eps == eps)].set_index("attack")["value"]
        assert {"pgd", "ensemble", "worst_case"} <= set(at.index), at
        assert at["worst_case"] <= min(at["pgd"], at["ensemble"])
        more = df[(df.metric == "check_more_steps") & (df.attack == "pgd") & (df.norm == norm) & (df.eps == eps)]
        assert len(more) == 1 and more.n.item() == 30
    assert not ((robust.attack == "ensemble") & (robust.eps == 0)).any()  # eps 0: nothing to attack
    pre = df[df.metric.isin(["check_logits", "check_num_classes", "randomized"])].set_index("metric")["value"]
    assert pre.to_dict() == {"check_logits": 1.0, "check_num_classes": 1.0, "randomized": 0.0}

    acc = df[df.metric.isin(ACCURACY_METRICS)]
    assert (acc.ci_low <= acc.value).all() and (acc.value <= acc.ci_high).all()
    assert (acc.ci_high - acc.ci_low > 0.05).all()  # 60 images: intervals are wide and say so
    assert df.loc[~df.metric.isin(ACCURACY_METRICS), ["ci_low", "ci_high"]].isna().all().all()
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    checks = manifest["models"]["cnn"]["checks"]
    assert {"logits", "num_classes", "more_steps(pgd,linf,0.1)", "more_steps(pgd,l2,0.5)", "pgd_vs_fgsm"} <= set(checks)
    assert pd.read_csv(result.run_dir / "results.csv").columns[-2:].tolist() == ["ci_low", "ci_high"]


def test_history_store_written_before_the_interval_columns_takes_new_rows(tmp_path):
    from robustbench_cnn.contract.results import Row, frame
    from robustbench_cnn.report.history import append, query

    row = Row(run_id="r1", suite="s", dataset="d", model="m", arch="a", metric="clean_acc", value=0.9, n=10)
    old = frame([row]).drop(columns=["ci_low", "ci_high"])  # as written before the extension
    db = tmp_path / "h.sqlite"
    append(db, old, "2026-01-01T00:00:00+00:00")
    append(db, frame([row]).assign(run_id="r2"), "2026-01-02T00:00:00+00:00")
    got = query(db, "clean_acc").set_index("run_id")
    assert pd.isna(got.loc["r1", "ci_low"]) and 0 < got.loc["r2", "ci_low"] < 0.9 < got.loc["r2", "ci_high"] <= 1
