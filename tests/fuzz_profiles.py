"""Hypothesis profiles for the fuzz tests: ``robustbench`` (200 examples, part of ``nox -s tests``,
derandomized: the same examples on every machine and every run, so CI cannot fail on a fresh draw) and
``fuzz`` (10,000 fresh random examples, ``nox -s fuzz``), chosen with ``ROBUSTBENCH_FUZZ=1``. Import
this module to load the profile."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ = os.environ.get("ROBUSTBENCH_FUZZ") == "1"
_COMMON = {
    "deadline": None,
    "database": None,  # no .hypothesis folder in the checkout
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
}
settings.register_profile("robustbench", max_examples=200, derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=10_000, **_COMMON)
settings.load_profile("fuzz" if FUZZ else "robustbench")
