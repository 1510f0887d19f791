"""The one-call Python API: the README's example runs verbatim; evaluate() keeps the suite's contracts."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import robustbench_cnn
from robustbench_cnn.contract.schema import COLUMNS
from robustbench_cnn.errors import InputError, SuiteError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_verbatim_and_returns_the_results_schema(capsys):
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    table = namespace["table"]
    assert isinstance(table, pd.DataFrame) and tuple(table.columns) == COLUMNS
    clean = table[table.metric == "clean_acc"].value.item()
    robust = table[table.metric == "robust_acc"]
    assert set(robust.attack) == {"fgsm", "pgd", "worst_case"} and (robust.value <= clean + 1e-9).all()
    assert (robust[robust.eps == 0].value == clean).all()
    worst = robust[(robust.attack == "worst_case") & (robust.eps > 0)].value.item()
    assert worst <= robust[(robust.attack != "worst_case") & (robust.eps > 0)].value.min() + 1e-9
    assert "metric" in capsys.readouterr().out


def test_importing_the_package_does_not_import_torch():
    code = "import sys, robustbench_cnn; assert 'torch' not in sys.modules; print(callable(robustbench_cnn.evaluate))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_bad_threat_models_and_broken_models_are_one_line_errors():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(InputError, match="eps\\[0\\] = 8.0 is out of range .* did you mean '8/255'"):
        robustbench_cnn.evaluate(net, eps=(8,))
    with pytest.raises(InputError, match="attack 'fgsm' supports norm linf, not 'l2'"):
        robustbench_cnn.evaluate(net, attacks=("fgsm",), norm="l2", eps=(0.5,))
    with torch.no_grad():
        net[1].weight.fill_(float("nan"))
    with pytest.raises(InputError, match="1.weight holds NaN"):  # "perfectly robust" NaN models are refused
        robustbench_cnn.evaluate(net, eval_size=10)
    with pytest.raises(Exception, match="returns \\(2, 3\\) for 2 images, not logits \\(2, 10\\)"):
        robustbench_cnn.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), eval_size=10)


def test_run_takes_a_suite_dict(tmp_path):
    suite = {
        "name": "api-dict", "device": "cpu",
        "dataset": {"name": "digits", "train_size": 64, "eval_size": 20},
        "models": [{"name": "m", "arch": "simple_cnn", "params": {"width": 4, "stages": 2},
                    "train": {"epochs": 1, "batch_size": 32}}],
        "evaluations": [{"attack": "fgsm", "eps": ["8/255"]}],
        "latency": {"enabled": False}, "checks": {"enabled": False},
    }  # fmt: skip
    result = robustbench_cnn.run(suite, out=tmp_path)
    assert (result.run_dir / "results.csv").is_file() and result.manifest["status"] == "complete"
    assert set(result.table.metric) >= {"clean_acc", "robust_acc"}
    with pytest.raises(SuiteError, match="suite dict: models\\[0\\]: params.width = 1.5"):
        robustbench_cnn.run({**suite, "models": [{**suite["models"][0], "params": {"width": 1.5}}]}, out=tmp_path)


def test_a_bare_network_with_normalize_matches_the_wrapped_model(digits, tiny_model):
    wrapped = robustbench_cnn.evaluate(tiny_model, data=digits, attacks=("fgsm",), eps=(0.1,), device="cpu")
    bare = robustbench_cnn.evaluate(tiny_model.net, data=digits, attacks=("fgsm",), eps=(0.1,), normalize=True,
                                    device="cpu")  # fmt: skip
    value = {name: t.set_index("metric").value for name, t in (("wrapped", wrapped), ("bare", bare))}
    assert value["bare"]["clean_acc"] == value["wrapped"]["clean_acc"] > 0.5
    assert value["bare"]["robust_acc"] == value["wrapped"]["robust_acc"] < value["wrapped"]["clean_acc"]
    assert value["wrapped"]["randomized"] == 0.0  # a deterministic model: no EOT, no flag


NOISY_PLUGIN = """
import torch
from torch import nn
from robustbench_cnn.models import MODELS


class Noisy(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x + 0.05 * torch.randn_like(x))


@MODELS.register("api_noisy_cnn")
def noisy(num_classes, in_channels=3):
    return Noisy(nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                               nn.Flatten(), nn.Linear(32, num_classes)))
"""


def test_evaluate_and_run_give_the_same_numbers_on_a_randomized_model(tmp_path):
    """Both attack a model whose passes differ through EOT, so both report the same robust accuracy."""
    from safetensors.torch import save_file

    from robustbench_cnn.config.spec import DatasetSpec, TrainSpec
    from robustbench_cnn.data import load_dataset
    from robustbench_cnn.models import build_model
    from robustbench_cnn.registry import load_plugins
    from robustbench_cnn.train.loop import train

    (tmp_path / "api_noisy_plugin.py").write_text(NOISY_PLUGIN)
    load_plugins(("api_noisy_plugin",), tmp_path)
    data = load_dataset(DatasetSpec(name="digits", eval_size=60), None)
    torch.manual_seed(0)
    model = build_model("api_noisy_cnn", 10, 1, data.mean, data.std)
    train(model, data.x_train, data.y_train, TrainSpec(epochs=8, lr=0.1, batch_size=64), seed=0, progress=False)
    save_file(model.state_dict(), str(tmp_path / "noisy.safetensors"))
    suite = {
        "name": "api-eot", "device": "cpu", "seed": 0, "plugins": ["api_noisy_plugin"],
        "dataset": {"name": "digits", "eval_size": 60},
        "models": [{"name": "noisy", "arch": "api_noisy_cnn", "checkpoint": "noisy.safetensors"}],
        "evaluations": [{"attack": "pgd", "eps": [0.1], "steps": 5}],
        "latency": {"enabled": False}, "checks": {"eval_size": 20, "steps": 2, "more_restarts": 1},
    }  # fmt: skip
    ran = robustbench_cnn.run(suite, out=tmp_path / "out", base_dir=tmp_path).table
    evaluated = robustbench_cnn.evaluate(model.eval(), data="digits", eval_size=60, attacks=("pgd",), eps=(0.1,),
                                         steps=5, device="cpu")  # fmt: skip

    def value(df, metric, **where):
        rows = df[(df.metric == metric) & (df.runtime.fillna("torch") == "torch")]
        for column, wanted in where.items():
            rows = rows[rows[column] == wanted]
        return rows.value.iloc[0]

    assert value(ran, "randomized") == value(evaluated, "randomized") == 1.0
    assert value(evaluated, "robust_acc", attack="pgd", eps=0.1) == value(ran, "robust_acc", attack="pgd", eps=0.1)
