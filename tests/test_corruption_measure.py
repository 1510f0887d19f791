"""The corruption measurement, a plugin of the engine (measures/corruption.py): its suite table, its rows
(checked against the model evaluated independently on the same corrupted images), its mCE in the
leaderboard, and compare gating its rows like the other accuracies."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.contract.results import read_csv, write_csv
from robustbench_cnn.corruptions import corrupt
from robustbench_cnn.engine.runner import RunOptions, run_suite
from robustbench_cnn.errors import SuiteError
from robustbench_cnn.report.leaderboard import leaderboard

SUITE = """
name = "corr"
[dataset]
name = "digits"
eval_size = 120
[[models]]
name = "cnn"
arch = "simple_cnn"
train = {{ epochs = 3 }}
[[models]]
name = "weak"
arch = "simple_cnn"
train = {{ epochs = 1 }}
[checks]
enabled = false
[latency]
enabled = false
{corruptions}
"""
TABLE = """[corruptions]
corruptions = ["gaussian_noise", "contrast", "jpeg_compression"]
severities = [1, 5]
eval_size = 100
reference = "weak"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corr")
    (tmp / "s.toml").write_text(SUITE.format(corruptions=TABLE))
    return run_suite(load_suite(tmp / "s.toml"), RunOptions(tmp / "out", tmp / "cache", progress=False))


def test_rows_are_the_model_measured_on_the_corrupted_images(run):
    df = run.table
    rows = df[df.metric == "corruption_acc"]
    assert len(rows) == 2 * 3 * 2 and set(rows.norm) == {"corruption"} and set(rows.eps) == {1.0, 5.0}
    assert (rows.n == 100).all() and rows.ci_low.notna().all()
    from robustbench_cnn.config.spec import DatasetSpec
    from robustbench_cnn.data import load_dataset

    data = load_dataset(DatasetSpec(name="digits", eval_size=120), None)
    model = _model(run, "cnn")
    x = data.x_eval[:100].numpy()
    for _, r in rows[rows.model == "cnn"].iterrows():
        images = torch.from_numpy(corrupt(x, r.attack, int(r.eps), seed=0)).float() / 255
        with torch.no_grad():
            acc = float((model(images).argmax(1) == data.y_eval[:100]).float().mean())
        assert acc == pytest.approx(r.value), (r.attack, r.eps)
    mean = df[(df.metric == "mean_corruption_acc") & (df.model == "cnn")].value.item()
    assert mean == pytest.approx(rows[rows.model == "cnn"].value.mean())
    facts = run.manifest["models"]["cnn"]["corruptions"]
    assert facts == {"set": "CIFAR-10-C-style, seed 0", "images": 100, "reference": "weak"}


def _model(run, name):
    """The run's trained model, rebuilt and filled from the run's model cache."""
    from robustbench_cnn.config.spec import DatasetSpec
    from robustbench_cnn.data import load_dataset
    from robustbench_cnn.engine.prepare import normalization
    from robustbench_cnn.models import build_model
    from robustbench_cnn.train.cache import ModelCache

    spec = next(m for m in load_suite(run.run_dir / "suite.toml").spec.models if m.name == name)
    data = load_dataset(DatasetSpec(name="digits", eval_size=120), None)
    mean, std = normalization(spec, data)
    model = build_model(spec.arch, data.num_classes, data.in_channels, mean, std, spec.params)
    assert ModelCache(run.run_dir.parents[2] / "cache").load(model, spec.arch, run.manifest["models"][name]["key"])
    return model.eval()


def test_the_leaderboard_shows_mean_corruption_accuracy_and_mce(run):
    board = leaderboard(run.table, run.manifest)[0].set_index("model")
    assert board.loc["cnn", "corruption"] == pytest.approx(
        run.table[(run.table.metric == "mean_corruption_acc") & (run.table.model == "cnn")].value.item()
    )
    assert board.loc["weak", "mce"] == pytest.approx(1.0)
    err = 1 - run.table[(run.table.metric == "corruption_acc")].pivot_table("value", ["model", "attack"], "eps")
    expected = np.mean([err.loc["cnn"].loc[c].sum() / err.loc["weak"].loc[c].sum() for c in err.loc["cnn"].index])
    assert board.loc["cnn", "mce"] == pytest.approx(expected)


def test_compare_gates_a_corruption_accuracy_drop(run, tmp_path, capsys):
    base = tmp_path / "base"
    shutil.copytree(run.run_dir, base)
    new = tmp_path / "new"
    shutil.copytree(run.run_dir, new)
    df = read_csv(new / "results.csv")
    hit = (df.metric == "corruption_acc") & (df.model == "cnn") & (df.attack == "contrast") & (df.eps == 1.0)
    assert df.loc[hit, "value"].item() > 0.3
    df.loc[hit, ["value", "ci_low", "ci_high"]] = [0.05, 0.0, 0.11]
    write_csv(df, new / "results.csv")
    assert main(["compare", str(base), str(new)]) == 1
    assert "corruption_acc" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[corruptions]\ncorruptions = ["frost"]', "corruptions.corruptions.0: .*unknown corruption 'frost'"),
        ("[corruptions]\nseverities = [6]", "corruptions.severities.0"),
        ('[corruptions]\nreference = "nope"', "corruptions.reference: no model named 'nope'"),
        ("[corruptions]\nimages = 3", "corruptions.images: unknown key"),
        ("[sections]\ncorruptions = {}", "sections: unknown key"),
        ("[corruption]\neval_size = 3", "corruption"),
    ],
)
def test_a_bad_table_is_one_line_naming_the_field(tmp_path, table, message):
    (tmp_path / "s.toml").write_text(SUITE.format(corruptions=table))
    with pytest.raises(SuiteError, match=message) as info:
        load_suite(tmp_path / "s.toml")
    assert "\n" not in str(info.value).strip() or str(info.value).count("s.toml") >= 1


def test_no_table_no_rows(tmp_path):
    (tmp_path / "s.toml").write_text(SUITE.format(corruptions=""))
    spec = load_suite(tmp_path / "s.toml").spec
    assert spec.section("corruptions") is None
    from robustbench_cnn.engine.plan import plan

    assert all(c.kind != "corruption" for c in plan(_resolved(spec), spec.models[0]))


def _resolved(spec):
    from robustbench_cnn.engine.devices import resolve_for_device

    return resolve_for_device(spec, torch.device("cpu"), 120)


def test_rows_frame_round_trips(run, tmp_path):
    write_csv(run.table, tmp_path / "r.csv")
    back = read_csv(tmp_path / "r.csv")
    assert len(back[back.metric == "corruption_acc"]) == 12
    assert isinstance(back, pd.DataFrame)


def test_the_report_plots_accuracy_against_severity_per_family(run):
    from robustbench_cnn.report.plots import write_report

    write_report(run.run_dir)
    assert {p.name for p in run.run_dir.glob("corruption_*.png")} == {"corruption_noise.png", "corruption_digital.png"}
    assert "corruption_noise.png" in (run.run_dir / "report.md").read_text()
    html = (run.run_dir / "report.html").read_text()
    assert "accuracy under noise corruptions (gaussian_noise)" in html
    assert "accuracy under digital corruptions (contrast, jpeg_compression)" in html
