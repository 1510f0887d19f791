import importlib.metadata
import sys
from importlib.metadata import EntryPoint

import pytest

from robustbench_cnn import registry
from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.data import DATASETS
from robustbench_cnn.errors import UnknownNameError
from robustbench_cnn.models import MODELS
from robustbench_cnn.registry import PluginError, Registry, load_plugins


def test_duplicate_name_is_an_error():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="unknown model 'mobilenet'; did you mean 'mobilenet_v2'"):
        MODELS.get("mobilenet")
    with pytest.raises(UnknownNameError, match="choose one of"):
        ATTACKS.get("zzzzzz")


def test_builtins_are_registered():
    assert {"simple_cnn", "resnet", "mobilenet_v2"} <= set(MODELS.names())
    assert {"fgsm", "pgd", "apgd_ce", "apgd_dlr", "square", "autoattack"} <= set(ATTACKS.names())
    assert {"digits", "cifar10", "mnist", "fashion_mnist", "svhn"} <= set(DATASETS.names())


def test_builtin_reregistration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        MODELS.register("resnet")(lambda **_: None)


def test_lazy_registration_imports_on_first_lookup(tmp_path, monkeypatch):
    (tmp_path / "lazy_plugin_mod.py").write_text("def make():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("thing")
    reg.register_lazy("later", "lazy_plugin_mod:make")
    assert "later" in reg.names() and "lazy_plugin_mod" not in sys.modules
    assert reg.get("later")() == 42
    with pytest.raises(ValueError, match="already registered"):
        reg.register("later")(lambda: 1)


PLUGIN = """
from torch import nn
from robustbench_cnn.models import MODELS


@MODELS.register("{name}")
def tiny_plugin_net(num_classes: int, in_channels: int = 3, width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
"""


def test_load_plugins_imports_suite_modules_from_base_dir(tmp_path):
    (tmp_path / "plugin_mod_b.py").write_text(PLUGIN.format(name="plugin_net_b"))
    (mod,) = load_plugins(["plugin_mod_b"], tmp_path)
    assert mod.__name__ == "plugin_mod_b" and "plugin_net_b" in MODELS
    assert str(tmp_path) not in sys.path  # only while importing
    with pytest.raises(PluginError, match="plugins\\[1\\]: no module named 'not_there_q' in") as info:
        load_plugins(["plugin_mod_b", "not_there_q"], tmp_path)
    (tmp_path / "broken_plugin_c.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    with pytest.raises(PluginError, match="plugins\\[0\\]: importing 'broken_plugin_c' failed: RuntimeError: boom$"):
        load_plugins(["broken_plugin_c"], tmp_path)
    assert "\n" not in str(info.value)


def test_entry_points_are_loaded_once(tmp_path, monkeypatch):
    (tmp_path / "ep_plugin_d.py").write_text(PLUGIN.format(name="ep_net_d") + "\ncalls = []\n\ndef setup():\n"
                                             "    calls.append(1)\n")  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("mine", "ep_plugin_d:setup", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group: eps if group == registry.ENTRY_POINT_GROUP else []
    )
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    reg = Registry("thing")
    reg.names()
    reg.names()
    assert "ep_net_d" in MODELS and sys.modules["ep_plugin_d"].calls == [1]
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    eps[:] = [EntryPoint("bad", "no_such_pkg_e:x", registry.ENTRY_POINT_GROUP)]
    with pytest.raises(PluginError, match="entry point 'bad' \\(no_such_pkg_e:x\\) .* failed: .*uninstall"):
        Registry("other").names()


def test_a_builtin_module_that_fails_to_import_is_named_on_every_lookup(tmp_path, monkeypatch):
    """A run whose code changed under it (or a broken install) failed its first cell with the real
    ImportError and every later cell with "unknown cell kind 'preflight'; choose one of: export"."""
    (tmp_path / "kinds_home_f.py").write_text("REG = None\n")
    (tmp_path / "kinds_ok_f.py").write_text("import kinds_home_f\nkinds_home_f.REG.register('one')(len)\n")
    (tmp_path / "kinds_bad_f.py").write_text("from nowhere_f import thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", True)
    reg = Registry("cell kind", ("kinds_ok_f", "kinds_bad_f"))
    importlib.import_module("kinds_home_f").REG = reg
    for _ in range(2):
        with pytest.raises(ImportError, match="nowhere_f"):
            reg.get("one")
    (tmp_path / "kinds_bad_f.py").write_text("x = 1\n")
    assert reg.get("one") is len and reg.names() == ["one"]
