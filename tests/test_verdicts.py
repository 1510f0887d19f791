"""Verdicts from evidence (Carlini et al. 2019; Athalye et al. 2018; AutoAttack's checks): models
built to fool a gradient attack are flagged UNRELIABLE with the reason, through a whole suite run;
the honest model beside them is not. (The zoo model with the wrong preprocessing is flagged in
``test_zoo.py``; the honest smoke models by the nightly, ``nox -s bench``.)"""

import textwrap

import pytest

from robustbench_cnn.attacks.preflight import eot_check
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.engine.runner import RunOptions, run_suite
from robustbench_cnn.report.leaderboard import leaderboard, threat_model

PLUGIN = '''
import torch
from torch import nn
from robustbench_cnn.models import MODELS


def body(in_channels, num_classes, width=8):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3,
                         padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(8 * width, num_classes))


class Quantized(nn.Module):
    """round(x * 4) / 4 before the network: a non-differentiable input quantizer (zero gradients)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


class Softmax(nn.Module):
    """Probabilities instead of logits (trains fine on NLL of the log; saturates CE for an attacker)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).softmax(1)


class Noisy(nn.Module):
    """Gaussian noise on the input at every forward pass, in eval mode too: a randomized model."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x + 0.1 * torch.randn_like(x))


@MODELS.register("verdict_honest")
def honest(num_classes, in_channels=3):
    return body(in_channels, num_classes)


@MODELS.register("verdict_quantized")
def quantized(num_classes, in_channels=3):
    return Quantized(body(in_channels, num_classes))


@MODELS.register("verdict_softmax")
def softmax(num_classes, in_channels=3):
    return Softmax(body(in_channels, num_classes))


@MODELS.register("verdict_noisy")
def noisy(num_classes, in_channels=3):
    return Noisy(body(in_channels, num_classes))
'''

SUITE = """
name = "verdicts"
seed = 0
device = "cpu"
plugins = ["verdict_plugin"]

[dataset]
name = "digits"
train_size = 600
eval_size = 80

[[models]]
name = "honest"
arch = "verdict_honest"
train = { epochs = 15, batch_size = 64, lr = 0.1 }
{models}

[[evaluations]]
attack = "pgd"
eps = [0.05, 0.1, 0.3]
steps = 10

[[threat_models]]
eps = 0.1

[ensemble]
steps = 10
restarts = 1

[checks]
steps = 10
eval_size = 60
more_steps_factor = 2
more_restarts = 1
eot_samples = 1       # the randomized model is attacked without EOT: that must be flagged

[latency]
enabled = false

[performance]
fold_batchnorm = false
"""

FLAGGED = {"quantized": "grad_norm", "softmax": "logits", "noisy": "eot"}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verdicts")
    (tmp / "verdict_plugin.py").write_text(textwrap.dedent(PLUGIN))
    models = "".join(f'\n[[models]]\nname = "{m}"\narch = "verdict_{m}"\n'
                     f"train = {{ epochs = 12, batch_size = 64, lr = 0.05 }}\n" for m in FLAGGED)  # fmt: skip
    path = tmp / "verdicts.toml"
    path.write_text(SUITE.replace("{models}", models))
    result = run_suite(load_suite(path), RunOptions(out_root=tmp / "out", cache_dir=tmp / "cache", progress=False))
    table, _ = leaderboard(result.table, result.manifest)
    return table.set_index("model"), result


@pytest.mark.parametrize("model", sorted(FLAGGED))
def test_a_model_built_to_fool_gradients_is_unreliable_with_the_reason(board, model):
    table, _ = board
    verdict = table.loc[model, "verdict"]
    assert verdict.startswith("UNRELIABLE (") and FLAGGED[model] in verdict, verdict


def test_the_honest_model_beside_them_is_reliable_at_the_declared_headline(board):
    table, result = board
    assert table.loc["honest", "verdict"] == "reliable", table.loc["honest", "verdict"]
    tm = threat_model(result.table, result.manifest)
    assert (tm.norm, tm.eps, tm.rule) == ("linf", 0.1, "declared in the suite")
    assert result.manifest["threat_models"] == [{"norm": "linf", "eps": 0.1, "rule": "declared in the suite"}]
    assert not table.loc["noisy", "eot"] and not table.loc["honest", "eot"]  # noisy was attacked without EOT


def test_the_quantizer_is_caught_by_evidence_a_gradient_attack_cannot_see(board):
    """Zero input gradients: PGD reads the quantized model as robust, a transfer attack from the
    honest model does not (the ``transfer`` check), nor do the gradient norms (``grad_norm``)."""
    _, result = board
    df = result.table
    rows = df[(df.model == "quantized") & df.metric.isin(["check_grad_norm", "check_transfer"])]
    assert set(rows.metric) == {"check_grad_norm", "check_transfer"} and (rows.value == 0).all(), rows


def test_eot_check_passes_a_deterministic_model_and_a_randomized_one_with_eot():
    assert eot_check(False, 1).passed and eot_check(True, 8).passed
    failed = eot_check(True, 1)
    assert not failed.passed and "checks.eot_samples >= 2" in failed.detail
