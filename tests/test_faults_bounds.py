"""Every defense and compression hyper-parameter is bounded: a huge value is one line and exit 2
before anything runs (it used to be accepted and then run for hours or allocate without limit)."""

from __future__ import annotations

import pytest

from robustbench_cnn.cli.main import main

SUITE = """
name = "bounds"
device = "cpu"
[dataset]
name = "digits"
train_size = 100
eval_size = 20
[[models]]
name = "a"
arch = "simple_cnn"
params = {{ width = 4, stages = 2, convs_per_stage = 1 }}
train = {{ epochs = 1 }}
{model_a}
[[models]]
name = "b"
arch = "simple_cnn"
params = {{ width = 4, stages = 2, convs_per_stage = 1 }}
train = {{ epochs = 1 }}
{model_b}
[[evaluations]]
attack = "fgsm"
eps = [0.1]
"""
HUGE = 10**9
FIELDS = [  # (defense or compress, its name, the field, what else it needs)
    ("defense", "pgd_at", "steps", ""), ("defense", "pgd_at", "step_size", ""),
    ("defense", "fgsm_rs", "step_factor", ""), ("defense", "fgsm_rs", "check_size", ""),
    ("defense", "trades", "steps", ""), ("defense", "trades", "step_size", ""), ("defense", "trades", "beta", ""),
    ("defense", "distillation", "temperature", ""), ("defense", "gaussian", "sigma", ""),
    ("compress", "distill", "temperature", 'teacher = "a", '), ("compress", "distill", "steps", 'teacher = "a", '),
    ("compress", "prune", "iterative_steps", 'source = "a", '), ("compress", "prune", "round_to", 'source = "a", '),
    ("compress", "prune", "calibration_size", 'source = "a", '),
]  # fmt: skip
CASES = [  # (model a's line, model b's line, where the one-line error points)
    ((f'{kind} = {{ name = "{name}", {field} = {HUGE} }}', "", f"models[0].{kind}: {name}.{field}") if kind == "defense"
     else ("", f'{kind} = {{ name = "{name}", {extra}{field} = {HUGE} }}', f"models[1].{kind}: {name}.{field}"))
    for kind, name, field, extra in FIELDS
]  # fmt: skip


@pytest.mark.parametrize(("model_a", "model_b", "field"), CASES, ids=[c[2].split(": ")[1] for c in CASES])
def test_a_huge_defense_or_compression_value_is_one_line_exit_2(tmp_path, capsys, model_a, model_b, field):
    suite = tmp_path / "bounds.toml"
    suite.write_text(SUITE.format(model_a=model_a, model_b=model_b))
    assert main(["plan", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"robustbench-cnn: error: {suite}: {field}: "), err
    assert "less than or equal to" in err
    assert not (tmp_path / "out").exists()


def test_the_bounds_admit_the_committed_suites_values(tmp_path, capsys):
    """The largest values the project's suites and papers use still validate."""
    trades = 'defense = { name = "trades", steps = 10, step_size = "2/255", beta = 6.0 }'
    prune = 'compress = { name = "prune", source = "a", iterative_steps = 5, round_to = 8, calibration_size = 1000 }'
    suite = tmp_path / "ok.toml"
    suite.write_text(SUITE.format(model_a=trades, model_b=prune))
    assert main(["plan", str(suite), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
