"""How far a fresh run may move from its baseline before ``compare`` calls it a regression."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerances:
    acc_points: float = 2.0
    alpha: float = 0.05
    latency_ratio: float = 2.0  # one model's p50 at batch 1 moved x1.51 between two runs of one build here
    latency_floor_ms: float = 0.5  # and slower by at least this much: sub-millisecond jitter is not a regression
    normalize_latency: bool = True  # divide latency ratios by their (batch_size, runtime) group's median ratio
    latency_alpha: float = 0.01  # significance of the Mann-Whitney U test on raw samples, where both runs have them
