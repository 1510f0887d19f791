"""robustbench-cnn: accuracy, robustness and speed of CNNs, before and after defense, compression and export.

``robustbench_cnn.evaluate(model, ...)`` and ``robustbench_cnn.run(suite, ...)`` (see
:mod:`robustbench_cnn.api`) are imported on first use, so importing the package does not import torch.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["evaluate", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from robustbench_cnn import api  # PEP 562: `import robustbench_cnn` loads no torch

        return getattr(api, name)
    raise AttributeError(f"module 'robustbench_cnn' has no attribute '{name}'")
