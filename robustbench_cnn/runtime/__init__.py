"""Inference runtimes and the latency harness shared by all of them."""
