"""Property: a generated suite that validates also runs (hypothesis).

Each example is a small suite on tiny digits data: one or two models (simple_cnn, ResNet,
MobileNetV2; any optimizer, schedule and augmentation; an optional defense; the second model
optionally pruned or distilled from the first), one or two attacks at a few budgets, with the
ensemble, sanity checks, latency and certification switched on or off; those that validate are
kept. The plan is made first and checked against the run (same cache keys, same cells, training
where it said so, a work estimate within the suite's own scale); then ``robustbench-cnn run`` runs
in-process under an audit hook and a time cap. Allowed: exit 0 with every cell done, or a recipe
that diverges (exit 1 and its one line). Never a traceback, never a failed cell, never a file
written outside ``--out`` (the system temp directory excepted, but never the test's own folder
beside ``--out``). 3 examples by default (< 60 s; MobileNetV2 only in the long run), 100 with
``ROBUSTBENCH_FUZZ=1``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from fuzz_profiles import FUZZ
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.engine.planning import make_plan
from robustbench_cnn.engine.store import CellStore
from robustbench_cnn.errors import SuiteError

TIME_CAP_S = 120
MAX_PLANNED_WORK = 5_000_000  # image-passes; what these generators can ask for stays far below
WRITES: list[str] = []
_RECORDING = [False]


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit(event: str, args: tuple) -> None:
    if not _RECORDING[0] or event != "open" or len(args) < 3 or not isinstance(args[0], str):
        return
    if isinstance(args[2], int) and args[2] & WRITE_FLAGS:
        WRITES.append(os.path.abspath(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside recording()


@contextmanager
def recording():
    WRITES.clear()
    _RECORDING[0] = True
    try:
        yield WRITES
    finally:
        _RECORDING[0] = False


class TimeCap(BaseException):
    """The run went past ``TIME_CAP_S`` (a BaseException: nothing in the run may swallow it)."""


@contextmanager
def time_cap(seconds: int):
    def fire(*_: object) -> None:
        raise TimeCap(f"the run took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"


def toml(doc: dict) -> str:
    """A suite document as TOML: top-level scalars, then tables, then arrays of tables."""
    lines = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict | list)]
    for key, table in ((k, v) for k, v in doc.items() if isinstance(v, dict)):
        lines += [f"[{key}]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    for key, tables in ((k, v) for k, v in doc.items() if isinstance(v, list)):
        for table in tables:
            lines += [f"[[{key}]]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


small_float = st.floats(0.01, 0.3).map(lambda x: round(x, 3))
ARCHS = {
    "simple_cnn": st.fixed_dictionaries({"width": st.integers(2, 8), "stages": st.integers(1, 2),
                                         "convs_per_stage": st.integers(1, 2)}),
    "resnet": st.fixed_dictionaries({"depth": st.just(8), "width": st.sampled_from([0.25, 0.5])}),
    "mobilenet_v2": st.fixed_dictionaries({"width_mult": st.sampled_from([0.1, 0.25])}),
}  # fmt: skip
ARCH_NAMES = sorted(ARCHS) if FUZZ else ["resnet", "simple_cnn"]  # MobileNetV2 costs ~30 s an example on 2 cores
DEFENSES = st.none() | st.one_of(
    st.fixed_dictionaries({"name": st.just("pgd_at"), "eps": small_float, "steps": st.integers(1, 2)}),
    st.fixed_dictionaries({"name": st.just("fgsm_rs"), "eps": small_float, "check_size": st.just(16)}),
    st.fixed_dictionaries({"name": st.just("trades"), "eps": small_float, "steps": st.just(1),
                           "beta": st.sampled_from([1.0, 6.0])}),
    st.fixed_dictionaries({"name": st.just("gaussian"), "sigma": st.sampled_from([0.1, 0.25, 0.5])}),
    st.fixed_dictionaries({"name": st.just("distillation"), "temperature": st.sampled_from([2.0, 20.0])}),
)  # fmt: skip
TRAIN = st.fixed_dictionaries({
    "epochs": st.just(1), "batch_size": st.sampled_from([16, 64]), "lr": st.sampled_from([0.01, 0.05, 0.1]),
    "optimizer": st.sampled_from(["sgd", "adamw"]), "schedule": st.sampled_from(["onecycle", "cosine", "constant"]),
    "augment": st.sampled_from(["none", "shift", "shift_flip"]),
})  # fmt: skip
ATTACK_NORM = st.sampled_from([("fgsm", "linf"), ("pgd", "linf"), ("pgd", "l2"), ("cw_pgd", "linf"), ("apgd_ce", "l2")])
EVALUATION = st.builds(
    lambda an, eps, steps: {"attack": an[0], "norm": an[1], "eps": eps, "steps": steps}, ATTACK_NORM,
    st.lists(st.sampled_from([0.0, "2/255", 0.05, 0.1, 0.3]), min_size=1, max_size=3, unique=True), st.integers(1, 3),
)  # fmt: skip


@st.composite
def suites(draw) -> dict:
    arch = draw(st.sampled_from(ARCH_NAMES))
    first = {"name": "m1", "arch": arch, "params": draw(ARCHS[arch]), "train": draw(TRAIN)}
    if (defense := draw(DEFENSES)) is not None:
        first["defense"] = defense
    models = [first]
    second = draw(st.sampled_from(["none", "plain", "prune", "distill"]))
    if second != "none":
        arch2 = draw(st.sampled_from(ARCH_NAMES))
        model = {"name": "m2", "arch": arch2, "params": draw(ARCHS[arch2]), "train": draw(TRAIN)}
        if second == "prune":
            model = {"name": "m2", "compress": {"name": "prune", "source": "m1", "ratio": 0.5}, "train": draw(TRAIN)}
        elif second == "distill":
            model["compress"] = {"name": "distill", "teacher": "m1", "temperature": 4.0}
        models.append(model)
    checks = draw(st.booleans())
    return {
        "name": draw(st.sampled_from(["gen", "a-b_c.1", "G"])),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "device": "cpu",
        "eval_batch_size": draw(st.sampled_from([7, 64, 256])),
        "dataset": {"name": "digits", "train_size": draw(st.integers(40, 120)), "eval_size": draw(st.integers(8, 30))},
        "ensemble": {"enabled": draw(st.booleans()), "members": ["cw_pgd"], "steps": 2, "restarts": 1},
        "checks": {"enabled": checks, "eval_size": 8, "steps": 2, "more_steps_factor": 2, "more_restarts": 1},
        "latency": {"enabled": draw(st.booleans()), "batch_sizes": [1], "warmup": 0, "min_repeats": 3,
                    "budget_s": 0.01},
        "certify": {"n0": 8, "n": 32, "eval_size": 4, "radii": [0.0, 0.25], "runtime": "torch"},
        "models": models,
        "evaluations": draw(st.lists(EVALUATION, min_size=1, max_size=2)),  # a budget twice: refused (exit 2)
    }  # fmt: skip


def _outside(path: str, out: Path, own: Path) -> bool:
    """A write that is neither under ``--out`` nor system scratch (the test's own folder is not scratch)."""
    p = Path(path)
    if p.is_relative_to(out) or path == os.devnull:
        return False
    return p.is_relative_to(own) or not p.is_relative_to(tempfile.gettempdir())


@pytest.mark.fuzz
@settings(max_examples=100 if FUZZ else 3)
@given(doc=suites())
def test_a_generated_suite_that_validates_also_runs(tmp_path_factory, capsys, doc):
    own = tmp_path_factory.mktemp("gen")
    suite, out = own / "suite.toml", own / "out"
    suite.write_text(toml(doc))
    try:
        loaded = load_suite(suite)
    except SuiteError:
        assume(False)  # the property is about suites that validate
    planned = make_plan(loaded, out / "cache")
    assert 0 < planned.total_work <= MAX_PLANNED_WORK, planned.total_work
    assert main(["plan", str(suite), "--out", str(out)]) == 0
    capsys.readouterr()
    with recording() as writes, time_cap(TIME_CAP_S):
        code = main(["run", str(suite), "--out", str(out), "--no-progress", "--no-report"])
    outside = sorted({w for w in writes if _outside(w, out, own)})
    assert not outside, f"written outside --out: {outside[:5]}"
    err = capsys.readouterr().err
    if code == 1 and err.endswith("training loss is nan; lower train.lr\n"):
        return  # a recipe that diverges on its data is found by training it: one line, exit 1, as documented
    run_dir = out / doc["name"] / os.readlink(out / doc["name"] / "latest")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert code == 0 and manifest["status"] == "complete", (err[-2000:], manifest.get("failed_cells"))
    index = CellStore(run_dir).read_index()["cells"]
    for m in planned.models:  # the plan said what the run did
        ran = manifest["models"][m.name]
        assert ran["key"] == m.key and ran["cache"] == ("miss" if m.source == "train" else "hit")
        assert sorted(e["label"] for e in index if e["model"] == m.name) == sorted(m.cells)


DUPLICATE_BUDGET = """
name = "dup"
device = "cpu"
[dataset]
name = "digits"
train_size = 40
eval_size = 8
[[models]]
name = "m1"
arch = "simple_cnn"
params = { width = 2, stages = 1 }
train = { epochs = 1 }
[[evaluations]]
attack = "fgsm"
eps = [0.05, "1/20"]
[ensemble]
enabled = false
[checks]
enabled = false
[latency]
enabled = false
"""


def test_a_budget_listed_twice_is_refused_or_run_once(tmp_path, capsys):
    """Either outcome is fine: one line naming ``evaluations[0].eps`` and exit 2, or one set of rows."""
    suite = tmp_path / "dup.toml"
    suite.write_text(DUPLICATE_BUDGET)
    code = main(["run", str(suite), "--out", str(tmp_path / "out"), "--no-progress", "--no-report"])
    err = capsys.readouterr().err
    assert (code == 2 and err.count("\n") == 1 and "evaluations[0].eps" in err) or code == 0
