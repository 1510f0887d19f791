"""Measurements: one module per kind of cell (clean, checks, latency, attack, certify, export), each
registering its kind with :func:`robustbench_cnn.engine.kinds.cell_kind`."""
