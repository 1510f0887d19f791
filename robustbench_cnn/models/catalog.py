"""The registry of architectures by name: the built-in modules register on first lookup, plugins when loaded."""

from robustbench_cnn.registry import Registry

MODELS: Registry = Registry(
    "model",
    (
        "robustbench_cnn.models.simple_cnn",
        "robustbench_cnn.models.resnet",
        "robustbench_cnn.models.mobilenet",
        "robustbench_cnn.models.published",
    ),
)
