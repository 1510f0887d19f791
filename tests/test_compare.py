"""compare: self = no regression; a real drop = regression; a small drop on few images = noise."""

import json

import pytest

from robustbench_cnn.cli.main import main
from robustbench_cnn.contract.results import Row, frame, write_csv
from robustbench_cnn.report.compare import compare
from robustbench_cnn.report.tolerances import Tolerances


def table(robust=0.60, n=400, clean=0.95, p50=2.0, check=1.0):
    common = {"run_id": "r", "suite": "s", "dataset": "digits", "model": "cnn", "arch": "simple_cnn"}
    rows = [
        Row(**common, metric="clean_acc", value=clean, n=n),
        Row(**common, metric="robust_acc", value=robust, n=n, attack="pgd", norm="linf", eps=0.1),
        Row(**common, metric="robust_acc", value=0.3, n=n, attack="pgd", norm="linf", eps=0.2),
        Row(**common, metric="latency_ms_p50", value=p50, n=50, batch_size=1),
        Row(**common, metric="check_grad_norm", value=check, n=n, norm="linf", eps=0.1),
    ]
    return frame(rows)


def write(tmp_path, name, df, env=None):
    path = tmp_path / f"{name}.csv"
    write_csv(df, path)
    if env is not None:
        (tmp_path / f"{name}.manifest.json").write_text(json.dumps({"environment": env}))
    return path


ENV = {"cpu": "x", "gpu": None, "torch_threads": 2, "packages": {"torch": "2.14.1"}}


def run_cli(*args):
    return main(["compare", *map(str, args)])


def test_against_itself_is_clean(tmp_path, capsys):
    path = write(tmp_path, "a", table(), ENV)
    assert run_cli(path, path) == 0
    assert "**0 regression(s)**" in capsys.readouterr().out


def test_ten_point_drop_on_400_images_is_a_regression(tmp_path, capsys):
    base, new = write(tmp_path, "a", table(), ENV), write(tmp_path, "b", table(robust=0.50), ENV)
    assert run_cli(base, new) == 1
    out = capsys.readouterr().out
    assert "**1 regression(s)**" in out and "-10.0 pt" in out
    line = next(ln for ln in out.splitlines() if "REGRESSION" in ln)
    assert "robust_acc" in line and "pgd" in line and "0.1" in line


def test_one_point_drop_on_100_images_is_noise(tmp_path):
    base, new = write(tmp_path, "a", table(n=100), ENV), write(tmp_path, "b", table(robust=0.59, n=100), ENV)
    assert run_cli(base, new) == 0


def test_large_drop_on_tiny_sample_is_noise_not_regression():
    base, new = load_run_df(table(robust=0.6, n=10)), load_run_df(table(robust=0.5, n=10))
    joined, *_ = compare(base, new, Tolerances())
    row = joined[(joined.metric == "robust_acc") & (joined.eps == "0.1")].iloc[0]
    assert row.verdict == "noise" and row.ci_high_new > row.ci_low_base  # the 95% intervals overlap
    no_ci = [load_run_df(r.table.drop(columns=["ci_low", "ci_high"])) for r in (base, new)]
    row = compare(*no_ci, Tolerances())[0].query("metric == 'robust_acc' and eps == '0.1'").iloc[0]
    assert row.verdict == "noise" and row.p_value > 0.05  # without intervals: Fisher's exact test


def load_run_df(df):
    from robustbench_cnn.report.compare import Run

    return Run(df, ENV, "mem")


def test_latency_ratio_and_environment(tmp_path):
    base, slow = load_run_df(table()), load_run_df(table(p50=3.0))
    joined, *_ = compare(base, slow, Tolerances(latency_ratio=1.25))
    assert joined.set_index("metric").loc["latency_ms_p50", "verdict"] == "REGRESSION"
    jitter = load_run_df(table(p50=0.4)), load_run_df(table(p50=0.8))  # 2x, but only 0.4 ms
    joined, *_ = compare(*jitter, Tolerances(latency_ratio=1.25, latency_floor_ms=0.5))
    assert joined.set_index("metric").loc["latency_ms_p50", "verdict"] == "ok"
    other_cpu = load_run_df(table(p50=3.0))
    other_cpu = other_cpu.__class__(other_cpu.table, {**ENV, "cpu": "y"}, "mem")
    joined, _, _, env = compare(base, other_cpu, Tolerances())
    assert env == ["cpu: x -> y"]
    assert joined.set_index("metric").loc["latency_ms_p50", "verdict"] == "not comparable"


def test_uniform_machine_slowdown_is_factored_out_but_one_slow_model_is_not():
    def many(slow: dict[str, float]):
        rows = []
        for m in ("a", "b", "c", "d"):
            common = {"run_id": "r", "suite": "s", "dataset": "d", "model": m, "arch": "x"}
            rows.append(Row(**common, metric="latency_ms_p50", value=2.0 * slow.get(m, 1.0), n=50, batch_size=64))
        return load_run_df(frame(rows))

    base = many({})
    uniform = many(dict.fromkeys("abcd", 2.5))
    joined, *_ = compare(base, uniform, Tolerances())
    assert joined.attrs["machine_factors"] == {("64", "torch"): pytest.approx(2.5)} and set(joined.verdict) == {"ok"}
    raw, *_ = compare(base, uniform, Tolerances(normalize_latency=False))
    assert set(raw.verdict) == {"REGRESSION"}
    one_model = many({"a": 3.0})
    joined, *_ = compare(base, one_model, Tolerances())
    assert joined.set_index("model").verdict.to_dict() == {"a": "REGRESSION", "b": "ok", "c": "ok", "d": "ok"}


def test_a_check_that_starts_failing_is_a_regression():
    joined, *_ = compare(load_run_df(table()), load_run_df(table(check=0.0)), Tolerances())
    assert joined.set_index("metric").loc["check_grad_norm", "verdict"] == "REGRESSION"


def test_added_and_removed_rows_are_listed_only_with_allow_removed(tmp_path, capsys):
    base = table()
    new = base[base.eps != 0.2]
    paths = write(tmp_path, "a", base), write(tmp_path, "b", new)
    assert run_cli(*paths) == 2
    err = capsys.readouterr().err.strip()
    assert "1 baseline row(s) missing" in err and "robust_acc pgd linf eps 0.2" in err and "--allow-removed" in err
    assert "\n" not in err
    assert run_cli(*paths, "--allow-removed") == 0
    out = capsys.readouterr().out
    assert "## Removed" in out and "- cnn torch/torch robust_acc pgd linf eps 0.2" in out


def test_header_only_new_is_refused(tmp_path, capsys):
    base = write(tmp_path, "a", table())
    empty = tmp_path / "empty.csv"
    empty.write_text(base.read_text().splitlines()[0] + "\n")
    assert run_cli(base, empty, "--allow-removed") == 2
    err = capsys.readouterr().err
    assert "empty.csv: the results table has no rows" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "content",
    ["not,a,results\n1,2,3\n", "run_id,suite,dataset,model,arch,defense,compression,format,runtime,device,metric,"
     "attack,norm,eps,value,n\nr,s,d,m,a,none,none,torch,torch,cpu,clean_acc,,,,high,10\n"],
)  # fmt: skip
def test_malformed_csv_is_exit_2_with_one_line(tmp_path, capsys, content):
    good = write(tmp_path, "a", table())
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    assert run_cli(good, bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("robustbench-cnn: error:") and "bad.csv" in err and "\n" not in err


def test_missing_input_is_exit_2(tmp_path, capsys):
    assert run_cli(tmp_path / "nope.csv", tmp_path / "nope.csv") == 2


def test_a_model_whose_weights_key_changed_is_named_a_stale_baseline(tmp_path, capsys):
    """The baseline's resnet20 was trained before a change to code its key covers: compare says so (and
    how to refresh it) instead of comparing silently; an unchanged key says nothing."""
    base, new = write(tmp_path, "a", table(), ENV), write(tmp_path, "b", table(), ENV)
    for name, key in (("a", "k-old"), ("b", "k-new")):
        (tmp_path / f"{name}.manifest.json").write_text(json.dumps({"environment": ENV,
                                                                    "models": {"cnn": {"key": key}}}))  # fmt: skip
    assert run_cli(base, new) == 0
    out = capsys.readouterr().out
    assert "> stale baseline for cnn: weights key k-old -> k-new" in out and "refresh the baseline" in out
    (tmp_path / "b.manifest.json").write_text(json.dumps({"environment": ENV, "models": {"cnn": {"key": "k-old"}}}))
    assert run_cli(base, new) == 0
    assert "stale baseline" not in capsys.readouterr().out


def _with_models(tmp_path, name: str, df, **cnn) -> object:
    path = write(tmp_path, name, df)
    (tmp_path / f"{name}.manifest.json").write_text(json.dumps({"environment": ENV, "models": {"cnn": cnn}}))
    return path


def test_the_same_weights_must_give_the_same_numbers_and_retrained_ones_are_judged_by_the_tolerance(tmp_path, capsys):
    """Identical weights (sha256): an accuracy row that moves by more than one image either way fails
    the gate (the evaluation changed; measured across ISA settings: 0 of 231 smoke rows move). The
    same recipe retrained (same key, other weights): a 1.5-point drop is within the tolerance."""
    same = {"key": "k", "weights_sha256": "w1"}
    base = _with_models(tmp_path, "a", table(robust=0.60), **same)
    assert run_cli(base, _with_models(tmp_path, "b", table(robust=0.6025), **same)) == 0  # one image of 400
    assert "> models: cnn same weights" in capsys.readouterr().out
    assert run_cli(base, _with_models(tmp_path, "c", table(robust=0.615), **same)) == 1  # six images up
    assert run_cli(base, _with_models(tmp_path, "d", table(robust=0.585), key="k", weights_sha256="w2")) == 0
    assert "> models: cnn retrained" in capsys.readouterr().out


def test_a_model_turning_unreliable_is_a_regression_even_through_a_new_check(tmp_path, capsys):
    from robustbench_cnn.contract.results import frame

    common = {"run_id": "r", "suite": "s", "dataset": "digits", "model": "cnn", "arch": "simple_cnn"}
    base = write(tmp_path, "a", table(), ENV)
    new_rows = frame([*(Row(**r) for r in table().to_dict("records")),
                      Row(**common, metric="check_eot", value=0.0, n=64)])  # fmt: skip
    new = write(tmp_path, "b", new_rows, ENV)
    assert run_cli(base, new) == 1
    assert "REGRESSION**: cnn: UNRELIABLE (eot) (reliable in the baseline)" in capsys.readouterr().out
