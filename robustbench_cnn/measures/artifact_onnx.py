"""An ``.onnx`` deployed artifact (an ONNX edge build from any toolchain) measured on ONNX Runtime's CPU
provider with its own input contract, read from the graph (:class:`robustbench_cnn.edge.models.OnnxFile`,
the runner the torch-free validator uses too):

- layout: NCHW or NHWC, from the input's shape (fixed image dimensions; the batch fixed or dynamic);
- dtype: float32 (or float16) gets the [0, 1] images scaled to the declared ``--input-range``; uint8
  gets the byte values 0..255 (rounded), so a uint8 input requires ``--input-range 0..255``; another
  integer input is refused (an ONNX graph records no scale/zero point for it). A QDQ int8 graph takes
  float input and quantizes inside;
- precision: ``int8`` where the graph quantizes (QuantizeLinear, DynamicQuantizeLinear, QLinear*,
  ConvInteger, MatMulInteger nodes, in the graph, its subgraphs or its functions) or takes integer
  input, else ``fp32``.

Tensor contract: as :class:`robustbench_cnn.measures.artifact_base.Artifact` (float32 ``(N, C, H, W)``
in [0, 1] in, float32 logits ``(N, K)`` out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from robustbench_cnn.edge.models import OnnxFile
from robustbench_cnn.errors import InputError
from robustbench_cnn.measures.artifact_base import Artifact

QUANTIZING_OPS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"})
FIX = "give the .onnx file of an image classifier (one float32 or uint8 input (N, C, H, W) or (N, H, W, C))"


def quantizes(graph: onnx.ModelProto) -> bool:
    """Whether any node of the model (its graph, nested subgraphs, local functions) quantizes."""
    graphs: list = [graph.graph]
    nodes = [n for f in graph.functions for n in f.node]
    while graphs:
        g = graphs.pop()
        nodes += list(g.node)
        graphs += [a.g for n in g.node for a in n.attribute if a.HasField("g")]
        graphs += [s for n in g.node for a in n.attribute for s in a.graphs]
    return any(n.op_type in QUANTIZING_OPS or n.op_type.startswith("QLinear") for n in nodes)


class OnnxArtifact(Artifact):
    """An ``.onnx`` file on ONNX Runtime behind the [0, 1] NCHW contract (see the module docstring)."""

    format = "onnx"

    def __init__(self, path: Path, input_range: str = "0..1", threads: int | None = None) -> None:
        try:
            model = OnnxFile(path, threads)
        except ValueError as exc:
            raise InputError(f"{path}: --artifact: not an ONNX model ONNX Runtime can run ({exc}); {FIX}") from None
        if model.dtype == np.uint8 and input_range != "0..255":
            raise InputError(f"{path}: --input-range {input_range}: its uint8 input takes the bytes 0..255; "
                             "pass --input-range 0..255")  # fmt: skip
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 (protobuf's DecodeError and onnx's own errors)
            raise InputError(f"{path}: --artifact: onnx cannot read the graph ({exc}); {FIX}") from None
        self._quantized = bool(np.issubdtype(model.dtype, np.integer)) or quantizes(proto)
        super().__init__(path, model, input_range)

    @property
    def quantized(self) -> bool:
        return self._quantized
