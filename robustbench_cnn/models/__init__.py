"""CNN architectures, registered by name or named by source (``torchvision:NAME``, ``timm:NAME``,
``pkg.module:factory``; see :mod:`robustbench_cnn.models.sources`).

Every registered factory has the signature ``fn(num_classes, in_channels, **params) -> nn.Module``
and returns a network that expects *normalized* input; :func:`build_model` wraps it in
:class:`~robustbench_cnn.models.normalize.Normalized` so that the model users, attacks and exports
see takes images in [0, 1] (RobustBench's convention).
"""

from robustbench_cnn.models.build import build_model, check_output, check_params
from robustbench_cnn.models.catalog import MODELS
from robustbench_cnn.models.normalize import Normalized, channels_last

__all__ = ["MODELS", "Normalized", "build_model", "channels_last", "check_output", "check_params"]
