"""The registry of datasets by name: the built-in loaders register on first lookup, plugins when loaded."""

from robustbench_cnn.registry import Registry

DATASETS: Registry = Registry(
    "dataset", ("robustbench_cnn.data.digits", "robustbench_cnn.data.vision", "robustbench_cnn.data.npz")
)
