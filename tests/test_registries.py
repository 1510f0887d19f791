"""Every registered plugin, built-in or not, is tested by the tests that exist: each test here is
parametrised over a registry's names, so a new model, dataset, defense, compressor, attack, cell kind
or zoo entry is checked the moment it registers."""

from __future__ import annotations

import pydantic
import pytest
import torch

from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.models import build_model
from robustbench_cnn.registry import HOOKS, Registry, hook, registry
from robustbench_cnn.zoo import ZOO

MODELS, DATASETS, ATTACKS = registry("models"), registry("datasets"), registry("attacks")
DEFENSES, COMPRESSORS, CELL_KINDS = registry("defenses"), registry("compressors"), registry("cell_kinds")
# the names a plugin spec may require: what it acts on, never a hyper-parameter (those have defaults)
REFERENCES = {"name", "source", "teacher"}


def _shape(arch: str) -> tuple[int, int, int]:
    """The image shape an architecture is published on (a zoo entry's), else a small RGB image."""
    for entry in ZOO.values():
        if entry.arch == arch:
            return entry.image_shape
    return (3, 32, 32)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_lazy_hook_resolves(name):
    found = hook(name)
    registries = {"models", "datasets", "attacks", "defenses", "compressors", "cell_kinds", "measures"}
    assert isinstance(found, Registry) == (name in registries)
    assert isinstance(found, Registry) or callable(found)


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_model_builds_and_gives_finite_logits(arch):
    c, h, w = _shape(arch)
    torch.manual_seed(0)
    model = build_model(arch, 10, c, [0.5] * c, [0.25] * c, image_size=h).eval()
    with torch.no_grad():
        out = model(torch.rand(2, c, h, w))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_with_files_missing_says_which_in_one_line(name, tmp_path):
    if name == "digits":  # embedded: nothing to miss
        pytest.skip("digits ships inside scikit-learn; it has no files to miss")
    loader = DATASETS.get(name)
    options = {"path": "missing.npz"} if name == "npz" else {}
    with pytest.raises(RobustBenchError) as info:
        loader(tmp_path, **options)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message


@pytest.mark.parametrize(("kind", "name"), [("defense", n) for n in DEFENSES.names()]
                         + [("compression", n) for n in COMPRESSORS.names()])  # fmt: skip
def test_every_defense_and_compressor_has_defaults_and_refuses_typos(kind, name):
    spec = (DEFENSES if kind == "defense" else COMPRESSORS).get(name).spec
    required = {f for f, info in spec.model_fields.items() if info.is_required()}
    assert required <= REFERENCES, f"{kind} '{name}' has hyper-parameters without a default: {required - REFERENCES}"
    with pytest.raises(pydantic.ValidationError, match="epochz"):
        spec.model_validate({"name": name, "source": "m", "teacher": "m", "epochz": 3})


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_declares_the_norms_it_supports(name):
    norms = ATTACKS.get(name).norms
    assert norms and set(norms) <= {"linf", "l2", "l1"}


@pytest.mark.parametrize("name", CELL_KINDS.names())
def test_every_cell_kind_has_typed_params_and_a_runner(name):
    kind = CELL_KINDS.get(name)
    assert kind.name == name and callable(kind.run)
    assert isinstance(kind.params, type)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_entry_names_a_registered_arch_and_a_digest(name):
    entry = ZOO[name]
    assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
    assert entry.license and entry.source
    if entry.kind == "torch":
        assert entry.arch in MODELS.names()
        hook("check_model_params")(entry.arch, dict(entry.params))
