"""Device faults without a GPU: every training, attack, check, certification and latency path runs
with the model on a fake accelerator (:mod:`fake_device`), where a tensor, module, generator or
attack left on the CPU raises as it does on CUDA."""

from __future__ import annotations

import pytest
import torch
from fake_device import FAKE, DeviceMismatch, fake_accelerator

from robustbench_cnn.config.load import load_suite
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.engine.runner import RunOptions, run_suite

MODELS_ONLY_SUITE = """
name = "fakedev-mbv2"
seed = 2
device = "cpu"
[dataset]
name = "digits"
train_size = 64
eval_size = 8
[[models]]
name = "mbv2"
arch = "mobilenet_v2"
params = { width_mult = 0.25 }
train = { epochs = 1, batch_size = 32 }
[[evaluations]]
attack = "pgd"
eps = [0.1]
steps = 1
[checks]
enabled = false
[latency]
enabled = false
"""

SUITE = """
name = "fakedev"
seed = 2
device = "cpu"
[dataset]
name = "digits"
train_size = 64
eval_size = 12
[[models]]
name = "cnn"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
train = { epochs = 1, batch_size = 32 }
[[models]]
name = "pgd_at"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
train = { epochs = 1, batch_size = 32 }
defense = { name = "pgd_at", eps = 0.1, steps = 1 }
[[models]]
name = "fgsm_rs"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
train = { epochs = 1, batch_size = 32 }
defense = { name = "fgsm_rs", eps = 0.1, check_size = 16 }
[[models]]
name = "trades"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
train = { epochs = 1, batch_size = 32 }
defense = { name = "trades", eps = 0.1, steps = 1 }
[[models]]
name = "gauss"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
train = { epochs = 1, batch_size = 32 }
defense = { name = "gaussian", sigma = 0.25 }
[[models]]
name = "distilled"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
train = { epochs = 1, batch_size = 32 }
defense = { name = "distillation", temperature = 5 }
[[models]]
name = "pruned"
compress = { name = "prune", source = "cnn", ratio = 0.5 }
train = { epochs = 1, batch_size = 32 }
[[models]]
name = "ard"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
compress = { name = "distill", teacher = "pgd_at", adversarial = true, steps = 1 }
train = { epochs = 1, batch_size = 32 }
[[evaluations]]
attack = "pgd"
eps = [0.1]
steps = 2
[[evaluations]]
attack = "cw_pgd"
norm = "l2"
eps = [0.5]
steps = 1
[[evaluations]]
attack = "apgd_dlr"
eps = [0.1]
steps = 2
[[evaluations]]
attack = "fgsm"
eps = [0.1]
[[evaluations]]
attack = "square"
eps = [0.1]
steps = 2
[certify]
n0 = 8
n = 32
eval_size = 2
batch_size = 16
[checks]
eval_size = 8
steps = 1
more_steps_factor = 2
more_restarts = 1
[latency]
batch_sizes = [1, 2]
warmup = 1
min_repeats = 3
budget_s = 0.01
[corruptions]
corruptions = ["gaussian_noise", "fog"]
severities = [3]
"""


def test_fake_device_catches_a_module_left_on_the_cpu():
    with fake_accelerator() as dev:
        model = torch.nn.Linear(3, 2)  # never moved
        with pytest.raises(DeviceMismatch, match="same device"):
            model(torch.rand(4, 3, device=dev))
        gen = torch.Generator()  # a CPU generator feeding a device op
        with pytest.raises(DeviceMismatch, match="generator"):
            torch.randn(3, generator=gen, device=dev)
        with pytest.raises(TypeError, match="numpy"):
            torch.rand(2, device=dev).numpy()
        assert model.to(dev)(torch.rand(4, 3, device=dev)).device == FAKE


def _run_on_fake_device(tmp_path, text: str):
    path = tmp_path / "suite.toml"
    path.write_text(text)
    with fake_accelerator():
        result = run_suite(load_suite(path), RunOptions(tmp_path / "out", tmp_path / "cache", device="meta",
                                                        progress=False))  # fmt: skip
    assert result.manifest["status"] == "complete", result.manifest.get("failed_cells")
    table = read_csv(result.run_dir / "results.csv")
    assert set(table.device) == {"meta"}
    return table


def test_whole_suite_runs_on_an_accelerator(tmp_path):
    """Every defense, compression, attack, check, certification, latency and corruption cell, on the fake
    device."""
    table = _run_on_fake_device(tmp_path, SUITE)
    assert {"clean_acc", "robust_acc", "certified_acc", "latency_ms_p50", "check_more_steps",
            "corruption_acc"} <= set(table.metric)  # fmt: skip


@pytest.mark.slow
def test_mobilenet_trains_and_attacks_on_an_accelerator(tmp_path):
    """MobileNetV2: the depthwise weight-gradient path of training and the BatchNorm fold of attacks."""
    table = _run_on_fake_device(tmp_path, MODELS_ONLY_SUITE)
    assert {"clean_acc", "robust_acc"} <= set(table.metric)


def test_training_moves_data_to_the_device_once_per_epoch():
    """A host-to-device copy synchronizes a GPU: the loop moves the training set once, then one
    epoch plan (indices + augmentation draws) per epoch, never a tensor per step."""
    from robustbench_cnn.config.spec import TrainSpec
    from robustbench_cnn.models import build_model
    from robustbench_cnn.train.loop import train

    copies = []
    real_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        out = real_to(self, *args, **kwargs)
        if self.device.type == "cpu" and out.device == FAKE and self.dim() > 0:
            copies.append(tuple(self.shape))
        return out

    torch.manual_seed(0)
    x, y = torch.rand(96, 1, 8, 8), torch.randint(0, 10, (96,))
    model = build_model("simple_cnn", 10, 1, (0.5,), (0.5,), {"width": 4})
    recipe = TrainSpec(epochs=3, batch_size=16, augment="shift_flip")
    with fake_accelerator() as dev, pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "to", counting_to)
        train(model, x, y, recipe, 0, dev, progress=False)
    plans = [s for s in copies if s == (96, 4)]
    assert len(plans) == 3  # one per epoch
    assert len(copies) - len(plans) <= 2 + len(list(model.parameters())) + len(list(model.buffers()))


def test_training_synchronizes_with_the_device_per_epoch_not_per_step():
    """Reading a device value on the host (``.item()``, ``float()``, ``nonzero``, a copy to the CPU)
    waits for the GPU's queue to drain: the loop does it a fixed number of times per epoch (the
    epoch's loss and accuracy), never per step, so the GPU is never starved between steps."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from robustbench_cnn.config.spec import TrainSpec
    from robustbench_cnn.models import build_model
    from robustbench_cnn.train.loop import train

    syncing = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.item.default"}

    class CountSyncs(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.syncs = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            on_device = any(isinstance(a, torch.Tensor) and a.device == FAKE for a in args)
            to_host = (
                str(func) == "aten._to_copy.default" and isinstance(out, torch.Tensor) and out.device.type == "cpu"
            )
            if on_device and (str(func) in syncing or to_host):
                self.syncs += 1
            return out

    def syncs_per_epoch(n: int) -> float:
        torch.manual_seed(0)
        x, y = torch.rand(n, 1, 8, 8), torch.randint(0, 10, (n,))
        model = build_model("simple_cnn", 10, 1, (0.5,), (0.5,), {"width": 4})
        with fake_accelerator() as dev, CountSyncs() as counter:
            train(model, x, y, TrainSpec(epochs=2, batch_size=16, augment="shift_flip"), 0, dev, progress=False)
        return counter.syncs / 2

    few, many = syncs_per_epoch(64), syncs_per_epoch(256)  # 4 and 16 steps per epoch
    assert few == many <= 3, (few, many)


def test_evaluate_runs_a_randomized_model_on_an_accelerator():
    """``evaluate``: the model, its randomness probe and its EOT crafting module on the device."""
    import robustbench_cnn

    class Noisy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

        def forward(self, x):
            return self.net(x + 0.05 * torch.randn_like(x))

    with fake_accelerator():
        table = robustbench_cnn.evaluate(Noisy(), data="digits", eval_size=8, attacks=("pgd",), eps=(0.1,), steps=1,
                                         device="meta", eot_samples=2)  # fmt: skip
    value = table.set_index("metric").value
    assert value["randomized"] == 1.0 and set(table.device) == {"meta"}
