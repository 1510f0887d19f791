"""Pruning (torch-pruning) and knowledge distillation: real behaviour on tiny models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustbench_cnn.compress import CompressJob
from robustbench_cnn.compress.distill import DistillSpec, distill, kd_loss
from robustbench_cnn.compress.prune import PruneSpec, prune, prune_channels
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.config.spec import SuiteSpec, TrainSpec
from robustbench_cnn.errors import CheckpointError
from robustbench_cnn.models import build_model
from robustbench_cnn.runtime.torch_runtime import count_macs, count_params
from robustbench_cnn.train.cache import load_weights, save_weights
from robustbench_cnn.train.loop import train

ARCHS = [
    ("simple_cnn", {"width": 8}),
    ("resnet", {"depth": 8, "width": 8}),
    ("mobilenet_v2", {"width_mult": 0.25, "small_input": True}),
]


def _build(arch, params, seed=0):
    torch.manual_seed(seed)
    return build_model(arch, 10, 1, [0.5], [0.25], params).eval()


@pytest.mark.parametrize(("arch", "params"), ARCHS)
@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_pruning_shrinks_the_network_and_reloads_without_pickle(tmp_path, arch, params, importance):
    model = _build(arch, params)
    x, y = torch.rand(16, 1, 16, 16), torch.randint(0, 10, (16,))
    macs, n_params = count_macs(model, (1, 16, 16)), count_params(model)
    prune_channels(model, PruneSpec(name="prune", source="m", ratio=0.5, importance=importance), x, y, 10)
    assert count_macs(model, (1, 16, 16)) < macs / 2.5  # ~ (1 - 0.5)^2 of the convolutions
    assert count_params(model) < n_params / 2
    assert model(x).shape == (16, 10)  # the classifier's outputs are never pruned

    save_weights(model, tmp_path / "pruned.safetensors")
    fresh = _build(arch, params, seed=1)  # the dense model a suite entry builds
    load_weights(fresh, tmp_path / "pruned.safetensors")
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model(x))


def test_a_pruned_checkpoint_does_not_load_into_another_architecture(tmp_path):
    model = _build("simple_cnn", {"width": 8})
    prune_channels(model, PruneSpec(name="prune", source="m", ratio=0.5), torch.rand(4, 1, 16, 16), None, 10)
    save_weights(model, tmp_path / "p.safetensors")
    with pytest.raises(CheckpointError, match="corrupt or does not fit"):
        load_weights(_build("resnet", {"depth": 8, "width": 8}), tmp_path / "p.safetensors")


def test_prune_compressor_starts_from_the_source_and_can_prune_twice(digits):
    source = _build("simple_cnn", {"width": 8})
    calls = []
    job = CompressJob({"src": source}, digits, lambda m, loss_fn=None: calls.append(m), seed=0, device="cpu")
    once = _build("simple_cnn", {"width": 8}, seed=5)
    prune(once, PruneSpec(name="prune", source="src", ratio=0.3), job)
    assert calls == [once]  # fine-tuned with the entry's recipe
    twice = _build("simple_cnn", {"width": 8}, seed=6)
    prune(twice, PruneSpec(name="prune", source="src", ratio=0.3), CompressJob({"src": once}, digits,
          lambda m, loss_fn=None: None, seed=0, device="cpu"))  # fmt: skip
    shape = tuple(digits.x_eval.shape[1:])
    assert count_macs(twice, shape) < count_macs(once, shape) < count_macs(source, shape)


def test_kd_loss_is_hintons():
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert kd_loss(s, s, t, y, 4.0, 0.0) == pytest.approx(float(F.cross_entropy(s, y)))
    assert kd_loss(t, t, t, y, 4.0, 1.0) == pytest.approx(0.0, abs=1e-6)  # student = teacher: no soft loss
    soft = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean")
    assert kd_loss(s, s, t, y, 4.0, 1.0) == pytest.approx(16 * float(soft), rel=1e-5)


class Shifted(torch.nn.Module):
    """A teacher that predicts (label + 1) mod 10, confidently."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).roll(1, dims=1) * 3


@pytest.fixture(scope="module")
def shifted_teacher(digits):
    base = _build("simple_cnn", {"width": 8})
    train(base, digits.x_train, digits.y_train, TrainSpec(epochs=6, lr=0.1, batch_size=64), seed=0, progress=False)
    return Shifted(base.eval())


@pytest.mark.parametrize("adversarial", [False, True])
def test_a_distilled_student_learns_the_teacher_not_the_labels(digits, shifted_teacher, adversarial):
    """Trained only on the shifted teacher's soft labels (alpha = 1), the student agrees with the
    teacher, not with the data's labels; with ARD too (soft labels on its own PGD examples)."""
    student = _build("simple_cnn", {"width": 8}, seed=1)
    recipe = TrainSpec(epochs=4, lr=0.1, batch_size=64)

    def finetune(m, loss_fn=None):
        return train(m, digits.x_train, digits.y_train, recipe, 0, "cpu", progress=False, loss_fn=loss_fn)

    spec = DistillSpec(name="distill", teacher="t", alpha=1.0, adversarial=adversarial, eps=0.05, steps=2)
    distill(student, spec, CompressJob({"t": shifted_teacher}, digits, finetune, seed=0, device="cpu"))
    with torch.no_grad():
        pred, teacher_pred = student.eval()(digits.x_eval).argmax(1), shifted_teacher(digits.x_eval).argmax(1)
    assert (pred == teacher_pred).float().mean() > 0.8
    assert (pred == digits.y_eval).float().mean() < 0.2


BASE = """
name = "s"
[[models]]
name = "a"
arch = "simple_cnn"
{extra}
"""


def _spec(extra: str) -> SuiteSpec:
    import tomllib

    return SuiteSpec.model_validate(tomllib.loads(BASE.format(extra=extra)))


def test_a_ratio_list_is_a_sweep_and_pruned_models_inherit_the_architecture():
    spec = _spec('[[models]]\nname = "p"\ncompress = { name = "prune", source = "a", ratio = [0.3, 0.5] }')
    names = [m.name for m in spec.models]
    assert names == ["a", "p-r0.3", "p-r0.5"]
    assert {m.arch for m in spec.models} == {"simple_cnn"}
    assert spec.models[2].compression == "prune(magnitude,0.5)"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[models]]\nname = "p"\narch = "simple_cnn"\ncompress = { name = "prune", source = "zz" }',
         "'zz' must be a model defined earlier"),
        ('[[models]]\nname = "p"\ncompress = { name = "prune", source = "a", ratio = 1.5 }', "less than 1"),
        ('[[models]]\nname = "p"\narch = "simple_cnn"\ncompress = { name = "prunee", source = "a" }', "prune"),
        ('[[models]]\nname = "s"\narch = "simple_cnn"\ncompress = { name = "distill", teacher = "a" }\n'
         'defense = { name = "pgd_at" }', "remove its defense"),
        ('[[models]]\nname = "p"\ncompress = { name = "prune", source = "a", importance = "random" }',
         "importance"),
    ],
)  # fmt: skip
def test_bad_compression_tables_are_one_line_errors(tmp_path, extra, message):
    from robustbench_cnn.errors import SuiteError

    path = tmp_path / "s.toml"
    path.write_text(BASE.format(extra=extra))
    with pytest.raises(SuiteError, match=message) as info:
        load_suite(path)
    assert "\n" not in str(info.value)
