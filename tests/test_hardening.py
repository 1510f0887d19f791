"""The last tracebacks (issue #25), each a one-line error with exit code 2 and nothing written: manifests
of the wrong JSON types, checkpoint metadata that names behaviour, paths that are not what they claim,
names with newlines, memory asked for beyond the machine, loose bundle manifests.

A property test fuzzes the run-manifest reader with a wrong JSON type at every field it reads (200
derandomized examples here, 10,000 fresh ones in ``nox -s fuzz``)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch
from fuzz_profiles import FUZZ  # noqa: F401  (loads the robustbench/fuzz hypothesis profile)
from hypothesis import given
from hypothesis import strategies as st

from robustbench_cnn.cli.main import main
from robustbench_cnn.contract.manifest import read_run_manifest
from robustbench_cnn.contract.results import Row, frame, write_csv
from robustbench_cnn.errors import InputError

ROW = {"run_id": "r", "suite": "s", "dataset": "digits", "model": "cnn", "arch": "simple_cnn"}
WRONG = [None, 5, 2.5, True, "text", [], [1], {}, {"a": 1}]
GOOD = {"format": 2, "run_id": "r", "suite": "s", "status": "complete", "started": "t", "seed": 0, "device": "cpu",
        "wall_seconds": 1.0, "environment": {"cpu": "x", "gpu": None, "torch_threads": 2, "packages": {"torch": "2"}},
        "models": {"cnn": {"source": "cache", "checks": {"large_eps": {"passed": True, "detail": "ok"}},
                           "cell_seconds": {"clean": 0.5}}},
        "failed_cells": [], "stage_seconds": {"clean": 0.5}, "dataset": {"name": "digits"}}  # fmt: skip


def _one_line_exit_2(capsys, argv: list[str], expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, (code, err)
    return err


def _run_dir(root: Path, name: str, manifest: object) -> Path:
    folder = root / name
    folder.mkdir()
    write_csv(frame([Row(**ROW, metric="clean_acc", value=0.9, n=100)]), folder / "results.csv")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("value", WRONG[:5] + [["a"]], ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("field", ["environment", "environment.packages", "environment.cpu", "models.cnn.checks"])
def test_compare_refuses_a_manifest_of_the_wrong_types(tmp_path, capsys, field, value):
    data = json.loads(json.dumps(GOOD))
    *parents, last = field.split(".")
    target = data
    for p in parents:
        target = target[p]
    target[last] = value
    if field == "environment" and value is None:  # an unknown environment is allowed: latencies not compared
        return
    if field == "environment.cpu" and (value is None or isinstance(value, str)):
        return
    base, new = _run_dir(tmp_path, "a", GOOD), _run_dir(tmp_path, "b", data)
    err = _one_line_exit_2(capsys, ["compare", str(base), str(new)], f"{new / 'manifest.json'}: {field}")
    assert "re-run" in err


def test_duplicate_keys_in_a_run_manifest_are_refused(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text('{"run_id": "a", "run_id": "b"}')
    with pytest.raises(InputError, match="duplicate key 'run_id'"):
        read_run_manifest(path)


def _wrong_type_at_some_field():
    """GOOD with one field the readers use replaced by a value of another JSON type."""
    fields = ["format", "run_id", "suite", "status", "started", "seed", "device", "wall_seconds", "environment",
              "environment.packages", "environment.packages.torch", "environment.torch_threads", "models",
              "models.cnn", "models.cnn.checks", "models.cnn.checks.large_eps", "models.cnn.checks.large_eps.passed",
              "models.cnn.cell_seconds", "models.cnn.cell_seconds.clean", "failed_cells", "stage_seconds",
              "stage_seconds.clean", "dataset"]  # fmt: skip
    leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3),
                                                                                              inner, max_size=3),
                          max_leaves=6)  # fmt: skip
    return st.tuples(st.sampled_from(fields), values)


@pytest.mark.fuzz
@given(_wrong_type_at_some_field())
def test_the_manifest_reader_returns_the_dict_or_one_line(case):
    field, value = case
    data = json.loads(json.dumps(GOOD))
    *parents, last = field.split(".")
    target = data
    for p in parents:
        target = target[p]
    target[last] = value
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"rbc-manifest-{os.getpid()}-{threading.get_ident()}.json"
    path.write_text(json.dumps(data))
    try:
        assert read_run_manifest(path) == data
    except InputError as exc:
        assert len(str(exc).splitlines()) == 1 and str(path) in str(exc)
    finally:
        path.unlink(missing_ok=True)


def _pruned_checkpoint(tmp_path: Path, layers: dict) -> Path:
    from safetensors.torch import save_file

    from robustbench_cnn.models import build_model

    model = build_model("simple_cnn", 10, 1, (0.5,), (0.5,), {"width": 4, "stages": 1, "convs_per_stage": 1})
    path = tmp_path / "pruned.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"structure": json.dumps(layers)})  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ({"net.0": {"__class__": 1}}, "'__class__' is not a width attribute"),
        ({"net.0": {"forward": 1}}, "'forward' is not a width attribute"),
        ({"net.0": {"out_channels": 10**12}}, "is not an integer in [1, 1048576]"),
        ({"net.0": {"out_channels": 0}}, "is not an integer in [1, 1048576]"),
        ({"net.0": {"out_channels": "4"}}, "malformed 'structure' metadata"),
        ({"net.0": {"num_features": 4}}, "(Conv2d) has no width attribute 'num_features'"),
        ({"net.0\n": {"out_channels": 4}}, "'net.0\\n', which the model does not have"),
    ],
    ids=["dunder", "forward", "huge", "zero", "string", "wrong-kind", "newline"],
)
def test_checkpoint_metadata_carries_data_not_behaviour(tmp_path, layers, expected):
    from robustbench_cnn.models import build_model
    from robustbench_cnn.models.checkpoint import UnusableCheckpoint, load_checkpoint

    path = _pruned_checkpoint(tmp_path, layers)
    model = build_model("simple_cnn", 10, 1, (0.5,), (0.5,), {"width": 4, "stages": 1, "convs_per_stage": 1})
    with pytest.raises(UnusableCheckpoint) as info:
        load_checkpoint(model, path)
    assert expected in str(info.value) and len(str(info.value).splitlines()) == 1
    assert not callable(getattr(model.net[0], "forward", None)) or model.net[0].forward.__self__ is model.net[0]


def test_a_key_with_a_newline_is_escaped_in_the_does_not_fit_message(tmp_path):
    from robustbench_cnn.models import build_model
    from robustbench_cnn.models.checkpoint import UnusableCheckpoint, load_checkpoint

    model = build_model("simple_cnn", 10, 1, (0.5,), (0.5,), {"width": 4, "stages": 1, "convs_per_stage": 1})
    state = {f"{k}\n" if i == 0 else k: v for i, (k, v) in enumerate(model.state_dict().items())}
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(UnusableCheckpoint) as info:
        load_checkpoint(model, tmp_path / "bad.pt", "wrapped")
    assert "\\n" in str(info.value) and len(str(info.value).splitlines()) == 1


@pytest.fixture
def suite(tiny_suite):
    return tiny_suite()


def test_paths_that_are_not_what_they_claim(tmp_path, capsys, suite):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _one_line_exit_2(capsys, ["run", str(suite), "--out", str(a_file)], "--out")
    _one_line_exit_2(capsys, ["run", str(suite), "--out", str(tmp_path / "o"), "--cache-dir", str(a_file)],
                     "--cache-dir")  # fmt: skip
    _one_line_exit_2(capsys, ["plan", str(suite), "--out", str(a_file)], "is a file, not a folder")
    _one_line_exit_2(capsys, ["run", str(suite), "--out", str(tmp_path / "o"), "--resume", str(tmp_path / "nope")],
                     "no such run folder; nothing to resume")  # fmt: skip
    assert not (tmp_path / "nope").exists() and not (tmp_path / "o" / "tiny").exists()
    run = _run_dir(tmp_path, "run", GOOD)
    _one_line_exit_2(capsys, ["compare", str(run), str(run), "--out", str(tmp_path)], "is a folder; give a file path")
    (tmp_path / "hist").mkdir()
    (tmp_path / "hist" / "history.sqlite").write_bytes(b"not a database at all" * 100)
    _one_line_exit_2(capsys, ["history", "--metric", "clean_acc", "--results", str(tmp_path / "hist")],
                     "not a readable history store")  # fmt: skip


def test_a_suite_path_that_is_a_fifo_is_refused_not_waited_on(tmp_path, capsys):
    fifo = tmp_path / "suite.toml"
    os.mkfifo(fifo)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(main(["plan", str(fifo)])), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "plan waited on a FIFO with no writer"
    assert result == [2] and "not a regular file" in capsys.readouterr().err


def test_memory_is_bounded_before_anything_is_allocated():
    """CIFAR-10 upsampled to 512x512 asked for 157 GB and died in the allocator; now it is refused from
    the sizes alone, before the resize allocates anything."""
    from robustbench_cnn.config.spec import DatasetSpec
    from robustbench_cnn.data import DatasetError
    from robustbench_cnn.data.base import check_memory

    with pytest.raises(DatasetError, match=r"dataset.image_size = 512 on 60,000 images needs 188.7 GB"):
        check_memory(DatasetSpec(name="cifar10", image_size=512), 60_000, 3) if _memory() < 188e9 else _skip()
    check_memory(DatasetSpec(name="digits", image_size=16), 1797, 1)  # 1.8 MB


def _memory() -> float:
    from robustbench_cnn.data.base import memory_bytes

    return float(memory_bytes() or 0)


def _skip() -> None:
    pytest.skip("this machine has more than 188 GB available")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=6)  # fmt: skip
LAYERS = st.sampled_from(["net.0", "net.1", "net.4", "", "net", "net.0.weight", "x\n"]) | st.text(max_size=8)
ATTRS = st.sampled_from(["in_channels", "out_channels", "groups", "num_features", "in_features", "out_features",
                         "forward", "__class__", "__dict__", "training", "weight"]) | st.text(max_size=8)  # fmt: skip


@pytest.mark.fuzz
@given(st.dictionaries(LAYERS, st.dictionaries(ATTRS, JSON, max_size=3), max_size=3))
def test_checkpoint_metadata_with_any_keys_loads_or_is_one_line(layers):
    """Whatever layer names, attribute names and JSON values the ``structure`` metadata holds, loading
    either narrows width attributes to sane integers or is one CheckpointError line; never a traceback,
    never a replaced method or class."""
    import tempfile

    from robustbench_cnn.errors import CheckpointError
    from robustbench_cnn.models import build_model
    from robustbench_cnn.models.checkpoint import load_checkpoint
    from robustbench_cnn.models.structure import MAX_WIDTH

    with tempfile.TemporaryDirectory() as tmp:
        path = _pruned_checkpoint(Path(tmp), layers)
        model = build_model("simple_cnn", 10, 1, (0.5,), (0.5,), {"width": 4, "stages": 1, "convs_per_stage": 1})
        classes = {name: type(m) for name, m in model.named_modules()}
        try:
            load_checkpoint(model, path)
        except CheckpointError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
    for name, module in model.named_modules():
        assert type(module) is classes[name] and "forward" not in vars(module)
        for attr in ("in_channels", "out_channels", "num_features"):
            if hasattr(module, attr):
                assert isinstance(getattr(module, attr), int) and 1 <= getattr(module, attr) <= MAX_WIDTH


def test_a_non_converged_attack_row_is_a_note_when_the_headline_converged():
    """PGD-20 at 0.250 against its stronger run at 0.170 fails its own more_steps, but the worst case
    (0.144) is below both: the model stays reliable, the failure is a note. Where the worst case is
    above a stronger run by more than the tolerance, the headline itself is flagged."""
    import pandas as pd

    from robustbench_cnn.contract.verdicts import verdicts

    def rows(headline: float | None) -> pd.DataFrame:
        base = {"model": "cnn", "format": "torch", "norm": "linf", "eps": 0.05}
        out = [{**base, "metric": "check_more_steps", "attack": "pgd", "value": 0.0},
               {**base, "metric": "check_large_eps", "attack": None, "value": 1.0, "eps": 0.5}]  # fmt: skip
        if headline is not None:
            out.append({**base, "metric": "check_headline_converged", "attack": None, "value": headline})
        return pd.DataFrame(out)

    assert verdicts(rows(1.0)) == {"cnn": "reliable"}
    assert verdicts(rows(0.0)) == {"cnn": "UNRELIABLE (more_steps pgd linf 0.05, headline_converged linf 0.05)"}
    assert verdicts(rows(None)) == {"cnn": "UNRELIABLE (more_steps pgd linf 0.05)"}  # no headline judgement


def test_headline_convergence_compares_the_worst_case_with_each_stronger_run():
    from types import SimpleNamespace

    from robustbench_cnn.engine.cells import AttackParams, ConvergeParams
    from robustbench_cnn.measures.attack import headline_convergence

    def stored(stronger: list[bool]):
        params = ConvergeParams(AttackParams("pgd", "linf", 0.05, steps=20), tolerance=0.05)
        return SimpleNamespace(cell=SimpleNamespace(params=params), arrays={"stronger": torch.tensor(stronger)})

    worst = torch.tensor([True, False, False, False, True, False, False, False, False, False])  # 0.2
    passed, detail, notes = headline_convergence(worst, None, [stored([True, True] + [False] * 8)], "linf", 0.05)
    assert passed and "converged" in detail and "superseded" in notes["more_steps(pgd,linf,0.05)"]
    failed = headline_convergence(worst, None, [stored([False] * 10)], "linf", 0.05)
    assert failed is not None and not failed[0] and "not converged" in failed[1] and failed[2] == {}
    # a subset: only the images both saw count (positions 0 and 4 of the eval split)
    subset = torch.tensor([0, 4, 12])
    assert headline_convergence(torch.tensor([True, True, False]), subset, [stored([True] * 10)], "linf", 0.05)[0]
    assert headline_convergence(worst, None, [], "linf", 0.05) is None
