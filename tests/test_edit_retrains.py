"""Editing a factory's code (same parameters) changes the model-cache key: the model retrains."""

from robustbench_cnn.config.load import load_suite
from robustbench_cnn.engine.runner import RunOptions, run_suite

SUITE = """
name = "edit"
device = "cpu"
[dataset]
name = "digits"
train_size = 64
eval_size = 16
[[models]]
name = "m"
arch = "edit_factory_k:net"
train = { epochs = 1, batch_size = 32 }
[latency]
enabled = false
[checks]
enabled = false
"""
FACTORY = (
    "from torch import nn\n\ndef net(num_classes: int, in_channels: int = 3):\n"
    "    return nn.Sequential(nn.Flatten(), nn.Linear(64 * in_channels, num_classes))\n"
)


def test_editing_the_factory_retrains(tmp_path):
    (tmp_path / "s.toml").write_text(SUITE)
    (tmp_path / "edit_factory_k.py").write_text(FACTORY)
    opts = lambda: RunOptions(tmp_path / "out", tmp_path / "cache", progress=False)  # noqa: E731
    first = run_suite(load_suite(tmp_path / "s.toml"), opts())
    second = run_suite(load_suite(tmp_path / "s.toml"), opts())
    (tmp_path / "edit_factory_k.py").write_text(FACTORY + "# edited\n")
    third = run_suite(load_suite(tmp_path / "s.toml"), opts())
    caches = [r.manifest["models"]["m"]["cache"] for r in (first, second, third)]
    assert caches == ["miss", "hit", "miss"]
