"""The typed cell layer: registered kinds, shard plans, exact merges, resumes inside a cell, format
numbers, and a manifest rebuilt from the cells (the fast slice of ``nox -s tests_ray``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.config.spec_measure import CertifySpec
from robustbench_cnn.engine.cells import (
    AttackParams,
    Cell,
    CellResult,
    CertifyParams,
    CleanParams,
    shard_plan,
)
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.devices import resolve_for_device
from robustbench_cnn.engine.execute import PlannedCell, compute, load_inputs
from robustbench_cnn.engine.kinds import CELL_KINDS
from robustbench_cnn.engine.plan import crafting, plan
from robustbench_cnn.engine.runner import RunOptions, run_suite
from robustbench_cnn.engine.store import CellStore, StoreError

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.mark.parametrize("name", CELL_KINDS.names())
def test_every_registered_cell_kind_is_typed_and_sharded_kinds_merge(name):
    kind = CELL_KINDS.get(name)
    assert kind.name == name and dataclasses.is_dataclass(kind.params) and callable(kind.run)
    assert (kind.merge is None) == (kind.images is None) == (kind.shard_size is None)
    assert kind.resources in ("accelerator", "cpu", "node")


@pytest.mark.parametrize("suite", ["smoke.toml", "smoke-edge.toml"])
def test_planned_cells_carry_their_kinds_parameter_type_and_named_inputs(suite):
    spec = resolve_for_device(load_suite(ROOT / "suites" / suite).spec, CPU, 100)
    for mspec in spec.models:
        cells = plan(spec, mspec)
        labels = [c.label for c in cells]
        assert len(set(labels)) == len(labels)
        for cell in cells:
            assert isinstance(cell.params, CELL_KINDS.get(cell.kind).params), cell.label
            assert all(label in labels[: labels.index(cell.label)] for _, label in cell.deps)  # inputs come first
        for cell in cells:
            if cell.kind in ("attack", "ensemble", "converge"):
                assert cell.dep("clean") == "clean"


@pytest.mark.parametrize(("n", "size"), [(1, 50), (90, 30), (91, 30), (500, 500), (120, 7)])
def test_a_shard_plan_covers_each_image_once_whatever_the_size(n, size):
    shards = shard_plan(n, size)
    covered = [i for s in shards for i in range(s.start, s.stop)]
    assert covered == list(range(n)) and [s.index for s in shards] == list(range(len(shards)))
    assert all(s.stop - s.start <= size for s in shards)


@pytest.fixture
def context(tmp_path, tiny_suite, digits, tiny_model):
    spec = resolve_for_device(load_suite(tiny_suite()).spec, CPU, len(digits.y_eval))
    ctx = RunContext(spec, tmp_path, "r", 3, CPU, tmp_path / "run", digits, progress=False)
    return ctx, ModelUnderTest(spec.models[0], tiny_model, {"final_train_acc": 0.9})


def _arrays(store: CellStore, cid: str) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in store.load(cid)[1].items() if k != "seconds"}


def _clean(ctx, target, store) -> PlannedCell:
    clean = PlannedCell(Cell("cnn", "clean", CleanParams()), "clean0")
    compute(ctx, target, clean, load_inputs(store, clean, {}), store)
    return clean


def test_certificates_do_not_depend_on_the_shard_size(context):
    ctx, target = context
    settings = CertifySpec(n0=10, n=60, eval_size=12, runtime="torch", batch_size=64)
    got = {}
    for size in (4, 5, 12):
        store = CellStore(ctx.run_dir / f"s{size}")
        pc = PlannedCell(Cell("cnn", "certify", CertifyParams(0.25, settings, size)), "cert")
        compute(ctx, target, pc, load_inputs(store, pc, {}), store)
        got[size] = _arrays(store, "cert")
        assert len(list((store.dir / "cert.shards").glob("*.json"))) == len(shard_plan(12, size))
    assert got[4].keys() == {"label", "prediction", "radius", "p_lower", "count"}
    for size in (5, 12):
        for name, values in got[4].items():
            np.testing.assert_array_equal(values, got[size][name], err_msg=name)


def _cell(ctx, which: str) -> Cell:
    if which == "certify":
        settings = CertifySpec(n0=10, n=60, eval_size=60, runtime="torch", batch_size=64)
        return Cell("cnn", "certify", CertifyParams(0.25, settings, 20))
    eps = 0.3 if which == "autoattack" else 0.1  # AutoAttack stops after APGD at 0.3 (FAB, Square: minutes)
    params = AttackParams(which, "linf", eps, steps=3, shard_size=20, crafting=crafting(ctx.spec), keep_adv=True)
    return Cell("cnn", "attack", params, (("clean", "clean"),))


@pytest.mark.parametrize("which", ["pgd", "autoattack", "certify"])
def test_a_cell_is_identical_across_runs_and_when_resumed_inside_the_cell(context, which):
    """Two runs with the same seed, and a run killed after shards 0 and 2 and resumed, store the same
    per-image arrays (AutoAttack is seeded; certification draws per image; attacks reseed per batch)."""
    ctx, target = context
    data = ctx.data
    ctx = dataclasses.replace(ctx, data=dataclasses.replace(data, x_eval=data.x_eval[:60], y_eval=data.y_eval[:60]))
    runs = []
    for name in ("first", "second"):
        store = CellStore(ctx.run_dir / name)
        clean = _clean(ctx, target, store)
        cell = _cell(ctx, which)
        pc = PlannedCell(cell, "c", (("clean", clean.id),) if cell.deps else ())
        compute(ctx, target, pc, load_inputs(store, pc, {clean.id: clean}), store)
        runs.append(_arrays(store, "c"))
    for path in [store.dir / "c.csv", store.dir / "c.meta.json", store.dir / "c.shards" / "1.json"]:
        path.unlink()  # killed after shards 0 and 2 were stored, before shard 1 and the merge
    compute(ctx, target, pc, load_inputs(store, pc, {clean.id: clean}), store)
    assert store.attempts("c") == {0: 1, 1: 2, 2: 1}
    runs.append(_arrays(store, "c"))
    expected = {"label", "prediction", "radius", "p_lower", "count"} if which == "certify" else {"mask", "adv"}
    assert runs[0].keys() == runs[1].keys() == runs[2].keys() == expected
    for other in runs[1:]:
        for name, values in runs[0].items():
            np.testing.assert_array_equal(values, other[name], err_msg=f"{which} {name}")


def test_a_stored_cell_of_another_format_is_computed_again(context, caplog):
    ctx, target = context
    store = CellStore(ctx.run_dir)
    _clean(ctx, target, store)
    assert store.load_if_done("clean0") is not None
    meta = json.loads((store.dir / "clean0.meta.json").read_text())
    (store.dir / "clean0.meta.json").write_text(json.dumps({**meta, "format": 1}))
    assert store.load_if_done("clean0") is None and "cell format 1" in caplog.text


def test_a_cell_index_of_another_format_is_refused_in_one_line(tmp_path):
    store = CellStore(tmp_path)
    with pytest.raises(StoreError, match="no readable cell index"):
        store.read_index()
    store.write_index([], "sha")
    index = json.loads((store.dir / "index.json").read_text())
    (store.dir / "index.json").write_text(json.dumps({**index, "format": 1}))
    with pytest.raises(StoreError, match="format 1, this version reads 2") as err:
        store.read_index()
    assert "\n" not in str(err.value)


def test_shard_results_keep_their_meta_and_refuse_another_image_range(tmp_path):
    store = CellStore(tmp_path)
    shard = shard_plan(10, 5)[1]
    store.save_shard("c", shard, CellResult([], {"mask": torch.ones(5, dtype=torch.bool)}, {"x": 1}), 0.5)
    part = store.load_shard("c", shard)
    assert part is not None and part.meta == {"x": 1, "seconds": 0.5} and part.arrays["mask"].all()
    assert store.load_shard("c", dataclasses.replace(shard, stop=9)) is None


def test_the_manifest_is_rebuilt_from_the_cells_when_resumed(tmp_path, tiny_suite, caplog):
    path = tiny_suite()
    opts = RunOptions(out_root=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False, run_id="r1")
    first = run_suite(load_suite(path), opts)
    manifest_path = first.run_dir / "manifest.json"
    lost = json.loads(manifest_path.read_text())
    for entry in lost["models"].values():  # killed after the cells were stored, before the manifest was saved
        entry.pop("checks"), entry.pop("cell_seconds")
    manifest_path.write_text(json.dumps(lost))
    caplog.set_level("INFO", "robustbench_cnn.engine.execute")
    resumed = run_suite(load_suite(path), dataclasses.replace(opts, run_id=None, resume=first.run_dir))
    assert resumed.manifest["cells"]["computed"] == 0
    total = len(CellStore(first.run_dir).read_index()["cells"])
    assert f"resume: {total} of {total} cells done; 0 cell(s) not in the run's index" in caplog.text
    for name, entry in first.manifest["models"].items():
        assert resumed.manifest["models"][name]["checks"] == entry["checks"]
        assert resumed.manifest["models"][name]["cell_seconds"] == entry["cell_seconds"]
    index = CellStore(first.run_dir).read_index()
    assert {e["label"] for e in index["cells"]} == set(first.manifest["models"]["cnn"]["cell_seconds"])


def test_resume_refuses_a_manifest_of_another_format_in_one_line(tmp_path, tiny_suite, capsys):
    path = tiny_suite()
    run_dir = tmp_path / "out" / "tiny" / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"suite": "tiny", "run_id": "old", "models": {}}))
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--resume", str(run_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "format 1, this version writes 2; start a new run" in err and err.count("\n") == 1
