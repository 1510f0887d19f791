"""The [performance] settings: bf16 crafting reports its parity, threads apply to the run only,
crafting settings are part of a cell's identity, and the default keeps cell ids stable."""

import torch

from robustbench_cnn.config.load import load_suite
from robustbench_cnn.engine.devices import resolve_for_device
from robustbench_cnn.engine.plan import plan
from robustbench_cnn.engine.runner import RunOptions, run_suite

PERFORMANCE = """
[performance]
threads = 1
attack_precision = "bf16"
fold_batchnorm = false
"""


def test_bf16_crafting_reports_parity_and_threads_apply_to_the_run_only(tmp_path, tiny_suite):
    path = tiny_suite()
    path.write_text(path.read_text() + PERFORMANCE)
    threads = torch.get_num_threads()
    opts = RunOptions(out_root=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    result = run_suite(load_suite(path), opts)
    assert torch.get_num_threads() == threads
    assert result.manifest["environment"]["torch_threads"] == 1
    df = result.table.set_index("metric")
    clean, agreement = df.loc["clean_acc", "value"], df.loc["bf16_agreement", "value"]
    assert agreement >= 0.95 and abs(df.loc["clean_acc_bf16", "value"] - clean) <= 0.05
    table = result.table
    robust = table[(table.metric == "robust_acc") & (table.attack == "pgd")].set_index("eps")["value"]
    assert robust[0.0] == clean and robust[0.1] <= clean  # the fp32 model decides, as always
    assert result.manifest["status"] == "complete"


def test_crafting_settings_change_attack_cell_ids_and_the_default_does_not(tiny_suite):
    cpu = torch.device("cpu")
    default = resolve_for_device(load_suite(tiny_suite()).spec, cpu, 60)
    path = tiny_suite(name="bf16.toml")
    path.write_text(path.read_text() + PERFORMANCE)
    bf16 = resolve_for_device(load_suite(path).spec, cpu, 60)
    ids = {
        name: {c.label: c.cell_id("key", "data", 0) for c in plan(spec, spec.models[0])}
        for name, spec in (("default", default), ("bf16", bf16))
    }
    attack_labels = [label for label in ids["default"] if label.startswith("attack")]
    assert attack_labels and all(ids["default"][a] != ids["bf16"][a] for a in attack_labels)
    assert ids["default"]["latency"] == ids["bf16"]["latency"]  # latency does not depend on crafting
    from robustbench_cnn.attacks.crafting import Crafting
    from robustbench_cnn.engine.plan import crafting

    assert crafting(default) == Crafting()  # the CPU baseline: fold BatchNorm, fp32, eager


def test_auto_settings_resolve_to_the_cpu_baseline_on_cpu_and_to_fast_ones_on_cuda(tiny_suite, monkeypatch):
    spec = load_suite(tiny_suite()).spec
    assert spec.performance.attack_precision == "auto" and spec.certify.batch_size is None
    cpu = resolve_for_device(spec, torch.device("cpu"), 60)
    assert (cpu.performance.attack_precision, cpu.performance.compile) == ("fp32", False)
    assert (cpu.certify.runtime, cpu.certify.batch_size) == ("onnxruntime", 1024)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = resolve_for_device(spec, torch.device("cuda", 0), 60)
    assert gpu.performance.attack_precision == "bf16" and gpu.performance.compile is False  # tiny work: no compile
    assert gpu.performance.cudnn_benchmark is False and cpu.performance.cudnn_benchmark is False  # nor autotuning
    assert (gpu.certify.runtime, gpu.certify.batch_size) == ("torch", 16384)
    big = resolve_for_device(spec, torch.device("cuda", 0), 10**7)  # 6 image-steps per image
    assert big.performance.compile is True and big.performance.cudnn_benchmark is True
    explicit = spec.model_copy(update={"performance": spec.performance.model_copy(update={"attack_precision": "fp32"})})
    assert resolve_for_device(explicit, torch.device("cuda", 0), 60).performance.attack_precision == "fp32"


class _MeanClassifier(torch.nn.Module):
    """Class 0 where an image's mean pixel exceeds 0.5, else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(1)
        return torch.stack([mean, torch.full_like(mean, 0.5)], 1)


def test_cudnn_autotunes_only_the_full_batch_shape():
    """Where the run turned autotuning on, each attack batch of the run's batch size is tuned; the
    last, smaller batch and the survivors a later restart attacks are not (a new shape costs seconds
    of timing on a GPU); the run's setting is restored after."""
    from robustbench_cnn.attacks.crafting import Crafting
    from robustbench_cnn.attacks.evaluate import robust_correct

    seen: list[tuple[int, bool]] = []

    def make_attack(model):
        def attack(x, y):  # fools the first half of what it is given (rounded down)
            seen.append((len(x), torch.backends.cudnn.benchmark))
            x_adv = x.clone()
            x_adv[: len(x) // 2] -= 0.5
            return x_adv

        return attack

    x, y = torch.full((10, 1, 2, 2), 0.9), torch.zeros(10, dtype=torch.long)
    clean = torch.ones(10, dtype=torch.bool)
    model = _MeanClassifier().eval()
    for setting in (True, False):
        seen.clear()
        torch.backends.cudnn.benchmark = setting
        try:
            robust = robust_correct(model, make_attack, x, y, clean, 0.5, "linf", batch_size=4, restarts=2,
                                    progress=False, crafting=Crafting(fold_batchnorm=False))  # fmt: skip
            assert torch.backends.cudnn.benchmark is setting
        finally:
            torch.backends.cudnn.benchmark = False
        # batches of 4, 4, 2; each restart attacks the survivors of the one before
        assert seen == [(4, setting), (2, False), (4, setting), (2, False), (2, False), (1, False)]
        assert robust.tolist() == [False, False, False, True] * 2 + [False, True]
