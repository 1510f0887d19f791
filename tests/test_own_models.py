"""Acceptance: a user's own models through a suite file and the CLI (torchvision by name, a plugin,
a module factory, a torch.save checkpoint of a bare network), and bad ones refused in one line."""

import importlib.util
import textwrap

import pandas as pd
import pytest
import torch
from torch import nn

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.spec import DatasetSpec
from robustbench_cnn.data import load_dataset

HEAD = """
name = "own"
seed = 0
device = "cpu"
{plugins}

[dataset]
name = "digits"
image_size = 16
train_size = 64
eval_size = 24

[[evaluations]]
attack = "fgsm"
eps = [0.1]

[latency]
enabled = false

[checks]
enabled = false

[performance]
fold_batchnorm = false
"""

PLUGIN = """
from torch import nn
from robustbench_cnn.models import MODELS


@MODELS.register("own_plugin_net")
def own_plugin_net(num_classes: int, in_channels: int = 3, width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))
"""

FACTORIES = """
from torch import nn


def tiny(width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 1000))
"""


def model_toml(name: str, arch: str, extra: str = "") -> str:
    return (
        f'\n[[models]]\nname = "{name}"\narch = "{arch}"\ntrain = {{ epochs = 1, batch_size = 32, lr = 0.01 }}\n{extra}'
    )


def write_suite(tmp_path, models: str, plugins: str = "") -> str:
    path = tmp_path / "own.toml"
    path.write_text(textwrap.dedent(HEAD).format(plugins=plugins) + models)
    return str(path)


def bare_shufflenet() -> nn.Module:
    import torchvision

    torch.manual_seed(3)
    net = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10)
    net.conv1[0] = nn.Conv2d(1, 24, 3, 2, 1, bias=False)
    return net.eval()


@pytest.mark.slow
def test_own_models_run_through_the_cli(tmp_path, capsys):
    (tmp_path / "own_suite_plugin.py").write_text(PLUGIN)
    (tmp_path / "own_suite_factories.py").write_text(FACTORIES)
    theirs = bare_shufflenet()
    torch.save(theirs.state_dict(), tmp_path / "mine.pt")
    models = (
        model_toml("tv", "torchvision:shufflenet_v2_x0_5")
        + model_toml("plugged", "own_plugin_net", "params = { width = 6 }")
        + model_toml("factory", "own_suite_factories:tiny")
        + model_toml(
            "theirs",
            "torchvision:shufflenet_v2_x0_5",
            'checkpoint = "mine.pt"\ncheckpoint_format = "net"\npreprocess = "dataset"',
        )
    )
    suite = write_suite(tmp_path, models, plugins='plugins = ["own_suite_plugin"]')
    assert main(["run", suite, "--out", str(tmp_path / "out"), "--no-report", "--no-progress"]) == 0
    df = pd.read_csv(tmp_path / "out" / "own" / "latest" / "results.csv")
    clean = df[df.metric == "clean_acc"].set_index("model")
    assert clean.arch.to_dict() == {"tv": "torchvision:shufflenet_v2_x0_5", "plugged": "own_plugin_net",
                                    "factory": "own_suite_factories:tiny",
                                    "theirs": "torchvision:shufflenet_v2_x0_5"}  # fmt: skip
    robust = df[df.metric == "robust_acc"].set_index("model").value
    assert (robust <= clean.value.loc[robust.index] + 1e-9).all()
    # the checkpoint's own network, normalized with the dataset's statistics, gives the reported accuracy
    data = load_dataset(DatasetSpec(name="digits", image_size=16, train_size=64, eval_size=24), None)
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = (theirs((data.x_eval - mean) / std).argmax(1) == data.y_eval).float().mean().item()
    assert clean.value["theirs"] == pytest.approx(expected)


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed (optional extra)")
def test_a_timm_model_runs_through_the_cli(tmp_path):
    suite = write_suite(tmp_path, model_toml("t", "timm:resnet10t"))
    assert main(["run", suite, "--out", str(tmp_path / "out"), "--no-report", "--no-progress"]) == 0


def _nan_checkpoint(tmp_path):
    state = bare_shufflenet().state_dict()
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, tmp_path / "nan.pt")
    return model_toml("n", "torchvision:shufflenet_v2_x0_5", 'checkpoint = "nan.pt"')


def _payload_checkpoint(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'PAYLOAD_RAN')!r}, 'w').close()",))

    torch.save({"conv1.0.weight": Payload()}, tmp_path / "evil.pt")
    return model_toml("e", "torchvision:shufflenet_v2_x0_5", 'checkpoint = "evil.pt"')


BAD = {
    "float_width": (
        lambda p: model_toml("m", "simple_cnn", "params = { width = 1.5 }"),
        "models[0]: params.width = 1.5",
    ),
    "float_stages": (lambda p: model_toml("m", "simple_cnn", "params = { stages = 2.0 }"), "params.stages = 2.0"),
    "zero_width": (lambda p: model_toml("m", "simple_cnn", "params = { width = 0 }"), "greater than or equal to 1"),
    "huge_stages": (lambda p: model_toml("m", "simple_cnn", "params = { stages = 1000 }"), "less than or equal to 6"),
    "unknown_arch": (lambda p: model_toml("m", "shufflenet_v2"), "models[0].arch: unknown model 'shufflenet_v2'"),
    "unknown_tv": (lambda p: model_toml("m", "torchvision:resnet19"), "did you mean 'resnet18'"),
    "no_module": (lambda p: model_toml("m", "nowhere_mod_z:net"), "no module named 'nowhere_mod_z'"),
    "nan_checkpoint": (_nan_checkpoint, "holds NaN or infinite values"),
    "payload_checkpoint": (_payload_checkpoint, "refused (never unpickled)"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_models_are_one_line_errors_with_exit_2(tmp_path, capsys, case):
    make, message = case
    suite = write_suite(tmp_path, make(tmp_path))
    assert main(["run", suite, "--out", str(tmp_path / "out"), "--no-report", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_a_missing_plugin_is_one_line_naming_the_file(tmp_path, capsys):
    suite = write_suite(tmp_path, model_toml("m", "simple_cnn"), plugins='plugins = ["not_a_plugin_y"]')
    assert main(["run", suite, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"robustbench-cnn: error: {suite}: plugins[0]: no module named 'not_a_plugin_y' in {tmp_path} "
                   "or the environment"]  # fmt: skip
