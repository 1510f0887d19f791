"""The torch-free edge validator: ``python -m robustbench_cnn.edge validate BUNDLE_DIR``.

Everything under this package imports only the standard library, numpy and a TFLite runtime
(``ai_edge_litert``, else ``tflite_runtime``), so it runs on a Raspberry Pi (64-bit OS) with
``pip install numpy ai-edge-litert``; a bundle of an ``.onnx`` artifact needs ``onnxruntime`` instead
(imported only when a bundle holds one). A bundle (``robustbench-cnn edge bundle RUN_DIR --out DIR``)
carries its own copy of this package, so nothing else needs installing.
"""
