"""A suite run keeps the raw latency samples of every latency row (torch and ONNX Runtime), and
``compare`` of the run directory with itself judges them: 0 regressions."""

from __future__ import annotations

import numpy as np
import pytest

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.engine.runner import RunOptions, run_suite
from robustbench_cnn.runtime.samples import SampleKey, read_samples, samples_dir

EXPORT = """
[[exports]]
format = "onnx"
precision = "int8"
calibration_size = 32
"""


@pytest.mark.slow  # a tiny suite with an int8 ONNX export: ~20 s of CPU
def test_run_keeps_samples_for_every_latency_row(tmp_path, tiny_suite, capsys):
    path = tiny_suite()
    path.write_text(path.read_text() + EXPORT)
    result = run_suite(load_suite(path), RunOptions(tmp_path / "out", tmp_path / "cache", progress=False))
    assert not result.manifest.get("failed_cells"), result.manifest.get("failed_cells")
    table = read_csv(result.run_dir / "results.csv")
    p50 = table[table.metric == "latency_ms_p50"]
    assert set(p50.runtime) == {"torch", "onnxruntime"} and set(p50.compression) == {"none", "int8"}
    for _, r in p50.iterrows():
        key = SampleKey(r.model, r.format, r.runtime, r.compression, int(r.batch_size))
        samples = read_samples(samples_dir(result.run_dir), key)
        assert samples is not None and len(samples) == r.n
        assert np.median(samples) == pytest.approx(r.value, rel=1e-5)
        spread = table[
            (table.metric == "latency_ms_iqr") & (table.runtime == r.runtime) & (table.compression == r.compression)
        ]
        q75, q25 = np.percentile(samples, [75, 25])
        assert spread.value.item() == pytest.approx(q75 - q25, rel=1e-3, abs=1e-6)
    capsys.readouterr()
    assert main(["compare", str(result.run_dir), str(result.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "**0 regression(s)**" in out and "raw latency samples on both sides" in out
