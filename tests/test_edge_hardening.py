"""The edge validator against hostile bundles: one line, exit 2, nothing read outside the bundle, nothing written.

A synthetic bundle is built here in milliseconds (no torch, no converter): a one-layer .tflite written
with the LiteRT flatbuffer schema, eval/prediction/adversarial npz files and a manifest whose
``validator`` section records the running validator's own files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import robustbench_cnn
from robustbench_cnn.contract.integrity import sha256
from robustbench_cnn.edge.__main__ import main
from robustbench_cnn.edge.bundle_format import EVAL_DATA, FORMAT_VERSION, SUMS, file_stem, sums_text
from robustbench_cnn.edge.manifest import PART
from robustbench_cnn.edge.selfcheck import code_root, own_hashes

schema = pytest.importorskip("ai_edge_litert.schema_py_generated", reason="ai-edge-litert is not installed")
flatbuffers = pytest.importorskip("flatbuffers")

MODEL, PRED, ADV, KEY = "models/lin.fp32.tflite", "data/pred-lin.fp32.npz", "data/adv-lin.npz", "pgd-linf-0.1"
FIX = "re-create the bundle with robustbench-cnn edge bundle"
RECOPY = "copy the bundle again from the machine that built it"


def tiny_tflite(weights: np.ndarray, bias: np.ndarray) -> bytes:
    """A float32 FULLY_CONNECTED model: input (1, 1, 8, 8), output (1, K) = x.flatten() @ weights.T + bias."""
    s = schema
    buffers = []
    for arr in (None, weights, bias):
        buf = s.BufferT()
        if arr is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(arr, np.float32).tobytes(), np.uint8)
        buffers.append(buf)

    def tensor(name: str, shape: tuple[int, ...], buffer: int):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), s.TensorType.FLOAT32, buffer
        return t

    graph = s.SubGraphT()
    graph.tensors = [tensor("x", (1, 1, 8, 8), 0), tensor("w", weights.shape, 1), tensor("b", bias.shape, 2),
                     tensor("y", (1, weights.shape[0]), 0)]  # fmt: skip
    graph.inputs, graph.outputs = [0], [3]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT()
    graph.operators = [op]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    model = s.ModelT()
    model.version, model.buffers, model.operatorCodes, model.subgraphs = 3, buffers, [code], [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_manifest(bundle: Path, manifest: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def rehash(bundle: Path, manifest: dict, *rels: str) -> dict:
    """Record the current sha256 of ``rels`` in ``files`` (a consistent forger) and rewrite the manifest."""
    for rel in rels:
        manifest["files"][rel] = sha256(bundle / rel)
    write_manifest(bundle, manifest)
    return manifest


def make_bundle(root: Path, n: int = 8) -> Path:
    """A valid bundle of one model with one attack under ``root/bundle``; ``root/outside`` holds bait files."""
    bundle, outside = root / "bundle", root / "outside"
    for d in (bundle / "models", bundle / "data", outside):
        d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((10, 64)).astype(np.float32), np.zeros(10, np.float32)
    (bundle / MODEL).write_bytes(tiny_tflite(w, b))
    x = rng.random((n, 1, 8, 8), dtype=np.float32)
    adv = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
    pred, pred_adv = (x.reshape(n, 64) @ w.T).argmax(1), (adv.reshape(n, 64) @ w.T).argmax(1)
    y = np.where(np.arange(n) % 4 == 0, (pred + 1) % 10, pred).astype(np.int64)  # 75% clean accuracy
    np.savez_compressed(bundle / EVAL_DATA, x=x, y=y)
    np.savez_compressed(bundle / PRED, clean=pred.astype(np.int64), **{KEY: pred_adv.astype(np.int64)})
    np.savez_compressed(bundle / ADV, **{KEY: adv})
    validator = own_hashes()
    for rel in validator:
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(code_root() / rel, bundle / rel)
    (outside / "secret.npz").write_bytes((bundle / PRED).read_bytes())
    (outside / "evil.tflite").write_bytes((bundle / MODEL).read_bytes())
    entry = {
        "model": "lin", "arch": "linear", "defense": "none", "compression": "none", "precision": "fp32",
        "parity": "passed", "file": MODEL, "predictions": PRED, "adversarial": ADV,
        "attacks": {KEY: {"attack": "pgd", "norm": "linf", "eps": 0.1}},
        "expected": {"clean_acc": float((pred == y).mean()),
                     "robust_acc": {KEY: float(((pred == y) & (pred_adv == y)).mean())}},
    }  # fmt: skip
    files = {p.relative_to(bundle).as_posix(): sha256(p) for p in sorted(bundle.rglob("*")) if p.is_file()}
    manifest = {
        "format_version": FORMAT_VERSION, "created": "2026-01-01T00:00:00+00:00",
        "source": {"suite": "synthetic", "run_id": "r1", "dataset": "digits", "images": n, "seed": 0},
        "tolerances": {"accuracy": 0.01, "agreement": 0.99, "adversarial_agreement": 0.97},
        "models": [entry], "left_out": [], "files": files, "validator": validator,
    }  # fmt: skip
    write_manifest(bundle, manifest)
    (bundle / SUMS).write_text(sums_text({"manifest.json": sha256(bundle / "manifest.json"), **validator}))
    return bundle


# --- the audit hook: every file opened while validating ------------------------------------------------
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _OPENED.append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside opened_files()
# the running validator's own package (it hashes its files to verify itself; an editable install
# does not put the checkout on sys.path) is code, not data read from outside the bundle
CODE = os.path.realpath(os.path.dirname(robustbench_cnn.__file__)) + os.sep
ALLOWED = tuple(os.path.realpath(p) for p in {*sys.path, sys.prefix, sys.base_prefix, sys.exec_prefix} if p and
                os.path.isdir(p)) + (CODE, "/dev/", "/proc/", "/sys/")  # fmt: skip


@contextmanager
def opened_files():
    """Collect the real paths of every file opened in the block (by this process)."""
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


def outside_reads(opened: list[str], bundle: Path) -> list[str]:
    """Opened paths neither in the bundle nor in Python's own code folders (stdlib, site-packages, the checkout)."""
    root = os.path.realpath(bundle)
    return [p for p in opened if not (p == root or p.startswith(root + os.sep) or p.startswith(ALLOWED))]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def run_validator(bundle: Path, *args: str) -> tuple[int, str, str, list[str]]:
    """``main`` in-process under the audit hook: (exit code, stdout, stderr, files opened outside)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with opened_files() as opened, redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", str(bundle), "--no-latency", *args])
    return code, out.getvalue(), err.getvalue(), outside_reads(opened, bundle)


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path)


@pytest.fixture
def manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def assert_refused(bundle: Path, line: str, *args: str) -> None:
    """Exit 2, exactly ``error: <line>`` on stderr, nothing opened outside, nothing written."""
    before = snapshot(bundle.parent)
    code, out, err, outside = run_validator(bundle, *args)
    assert (code, err) == (2, f"error: {line}\n"), out + err
    assert outside == []
    assert snapshot(bundle.parent) == before


def test_the_synthetic_bundle_validates(bundle):
    code, out, err, outside = run_validator(bundle)
    assert code == 0, out + err
    assert "1/1 models match" in out and outside == []
    assert (bundle / "validation" / "results.csv").is_file()


@pytest.mark.parametrize("path", ["../outside/evil.tflite", "/etc/passwd", "models/../../outside/evil.tflite",
                                  "./models/lin.fp32.tflite", "models\\lin.fp32.tflite", ""])  # fmt: skip
def test_a_path_leaving_the_bundle_is_refused(bundle, manifest, path):
    manifest["models"][0]["file"] = path
    write_manifest(bundle, manifest)
    problem = f"{path!r} is not a relative path of plain names (no leading /, no . or .., no \\)"
    assert_refused(bundle, f"{bundle}/manifest.json: models[0].file: {problem}; {FIX}")


def test_an_absolute_predictions_path_is_refused(bundle, manifest):
    manifest["models"][0]["predictions"] = "/etc/passwd"
    write_manifest(bundle, manifest)
    problem = "'/etc/passwd' is not a relative path of plain names (no leading /, no . or .., no \\)"
    assert_refused(bundle, f"{bundle}/manifest.json: models[0].predictions: {problem}; {FIX}")


def test_a_model_symlinked_out_of_the_bundle_is_refused(bundle, manifest):
    (bundle / MODEL).unlink()
    (bundle / MODEL).symlink_to(bundle.parent / "outside" / "evil.tflite")  # same bytes: the sha256 matches
    problem = "resolves outside the bundle (a symbolic link leaves it)"
    assert_refused(bundle, f"{bundle}/{MODEL}: files: {problem}; {RECOPY}")


def test_a_symlinked_validation_folder_is_refused_and_nothing_is_written(bundle):
    target = bundle.parent / "outside" / "results"
    target.mkdir()
    (bundle / "validation").symlink_to(target)
    fix = "pass --out to a plain folder outside the bundle, or remove the link"
    problem = "is a symbolic link (the validator does not write through links)"
    assert_refused(bundle, f"{bundle}/validation: --out: {problem}; {fix}")
    assert list(target.iterdir()) == []


@pytest.mark.parametrize(
    ("rel", "field"),
    [(PRED, "models[0].predictions"), (MODEL, "models[0].file"), (ADV, "models[0].adversarial"), (EVAL_DATA, "files")],
)
def test_a_referenced_file_missing_from_files_is_refused(bundle, manifest, rel, field):
    del manifest["files"][rel]
    write_manifest(bundle, manifest)
    problem = "not listed in files (its sha256 is unrecorded)"
    assert_refused(bundle, f"{bundle}/{rel}: {field}: {problem}; {FIX}")


def test_missing_predictions_is_refused(bundle, manifest):
    del manifest["models"][0]["predictions"]
    write_manifest(bundle, manifest)
    assert_refused(bundle, f"{bundle}/manifest.json: models[0].predictions: missing; {FIX}")


@pytest.mark.parametrize(("value", "kind"), [(None, "null"), (5, "int"), ([], "list"), ({}, "dict")])
def test_a_non_path_where_a_path_is_expected_is_refused(bundle, manifest, value, kind):
    manifest["models"][0]["predictions"] = value
    write_manifest(bundle, manifest)
    assert_refused(
        bundle, f"{bundle}/manifest.json: models[0].predictions: expected a relative path, found {kind}; {FIX}"
    )


@pytest.mark.parametrize("precision", ["", "fp16", None, 8])
def test_an_empty_or_unknown_precision_is_refused(bundle, manifest, precision):
    manifest["models"][0]["precision"] = precision
    write_manifest(bundle, manifest)
    problem = f"{str(precision)!r} is not one of fp32, int8"
    assert_refused(bundle, f"{bundle}/manifest.json: models[0].precision: {problem}; {FIX}")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("format_version", 1, "bundle format 1; this validator reads format 2"),
        ("format_version", True, "bundle format True; this validator reads format 2"),
        ("tolerances.accuracy", -0.1, "-0.1 is outside [0, 1]"),
        ("tolerances.agreement", float("nan"), "nan is outside [0, 1]"),
        ("tolerances.agreement", "0.99", "expected a number, found str"),
        ("source.images", 10**400, f"{10**400!r} is outside [1, 1e+07]"),
        ("models", [], "expected a list of 1 to 256 models, found list"),
    ],
)
def test_a_field_of_the_wrong_type_or_range_is_refused(bundle, manifest, field, value, problem):
    *parents, key = field.split(".")
    target = manifest
    for part in parents:
        target = target[part]
    target[key] = value
    write_manifest(bundle, manifest)
    assert_refused(bundle, f"{bundle}/manifest.json: {field}: {problem}; {FIX}")


@pytest.mark.parametrize("parity", [None, 5, [], {}, "x", "missing"])
def test_an_export_parity_outside_its_three_values_is_refused(bundle, manifest, parity):
    """``models[].parity`` is passed, failed or unrecorded (as the bundler found it), never anything else."""
    if parity == "missing":
        del manifest["models"][0]["parity"]
        problem = "models[0].parity: missing"
    else:
        manifest["models"][0]["parity"] = parity
        problem = f"models[0].parity: {str(parity)!r} is not one of passed, failed, unrecorded"
    write_manifest(bundle, manifest)
    assert_refused(bundle, f"{bundle}/manifest.json: {problem}; {FIX}")


def test_duplicate_keys_in_the_bundle_manifest_are_refused(bundle):
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text.replace('"parity": "passed"', '"parity": "passed", "parity": "failed"'))
    assert_refused(bundle, f"{bundle}/manifest.json: manifest: unreadable manifest (duplicate key 'parity'); {RECOPY}")


def test_a_tampered_file_is_named(bundle):
    data = bytearray((bundle / ADV).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / ADV).write_bytes(bytes(data))
    assert_refused(bundle, f"{bundle}/{ADV}: files: sha256 mismatch (the file was modified or corrupted); {RECOPY}")


def test_an_unknown_model_option_is_refused(bundle):
    assert_refused(bundle, f"{bundle}: --model: no model 'nope' in the bundle; choose from ['lin']", "--model", "nope")


def test_a_tampered_validator_refuses_to_run(bundle):
    """The bundle's own copy of the validator, run as on a Pi, refuses when its code differs from the manifest."""
    rel = "robustbench_cnn/edge/validate.py"
    with (bundle / rel).open("a") as fh:
        fh.write("\n# tampered\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, "-m", "robustbench_cnn.edge", "validate", ".", "--no-latency"]
    proc = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=120, env=env)
    fix = "run the validator this bundle ships, after checking SHA256SUMS (README: Validate on a Raspberry Pi)"
    problem = "sha256 differs from the manifest (this validator was modified)"
    assert (proc.returncode, proc.stderr) == (2, f"error: {bundle}/{rel}: validator: {problem}; {fix}\n")
    assert not (bundle / "validation").exists()
    proc = subprocess.run([*cmd, "--self-check"], cwd=bundle, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and f"  {rel}\n" in proc.stdout  # the hashes are printed before the verdict


def test_self_check_prints_the_hashes_the_manifest_records(bundle, manifest, capsys):
    assert main(["validate", str(bundle), "--self-check"]) == 0
    out = capsys.readouterr().out
    for rel, digest in manifest["validator"].items():
        assert f"{digest}  {rel}\n" in out
    assert f"SHA256SUMS sha256 {sha256(bundle / SUMS)} " in out  # the hash a user compares
    main(["validate", str(bundle), "--no-latency"])
    report = json.loads((bundle / "validation" / "results.json").read_text())
    assert report["sha256sums"] == sha256(bundle / SUMS)


def test_sha256sums_catches_an_emptied_main_before_it_runs(bundle):
    """The README's check with the system's sha256sum: an emptied __main__.py (which would exit 0 having
    validated nothing) fails it, and SHA256SUMS' own sha256 is the hash shipped separately."""
    sha256sum = shutil.which("sha256sum")
    if sha256sum is None:
        pytest.skip("no sha256sum on this machine")
    assert subprocess.run([sha256sum, "--check", "--quiet", SUMS], cwd=bundle).returncode == 0
    (bundle / "robustbench_cnn/edge/__main__.py").write_text("")
    proc = subprocess.run([sha256sum, "--check", "--quiet", SUMS], cwd=bundle, capture_output=True, text=True)
    assert proc.returncode == 1 and "robustbench_cnn/edge/__main__.py: FAILED" in proc.stdout


def _zip_member(path: Path, name: str, header_shape: tuple[int, ...], payload: int) -> None:
    """An npz whose ``name`` member declares ``header_shape`` float32 and holds ``payload`` zero bytes."""
    header = {"descr": "<f4", "fortran_order": False, "shape": header_shape}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            for start in range(0, payload, 1 << 24):
                fh.write(bytes(min(1 << 24, payload - start)))
        zf.writestr("y.npy", b"")


@pytest.mark.parametrize(
    ("shape", "payload", "problem"),
    [
        ((8, 1, 100_000, 100_000), 1024, "declares 320000000000 bytes, the file holds 1024"),
        ((8, 1, 8, 8), 300 << 20, f"inflates to {(300 << 20) + 128} bytes (> {256 << 20} allowed)"),  # 1.3 MB
    ],
)
def test_a_decompression_bomb_is_refused_before_inflating(bundle, manifest, shape, payload, problem):
    _zip_member(bundle / EVAL_DATA, "x", shape, payload)
    rehash(bundle, manifest, EVAL_DATA)
    assert (bundle / EVAL_DATA).stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        assert_refused(bundle, f"{bundle}/{EVAL_DATA}: x: {problem}; {FIX}")
        assert tracemalloc.get_traced_memory()[1] < 32 << 20  # nothing was inflated
    finally:
        tracemalloc.stop()


def test_a_pickled_array_is_refused(bundle, manifest):
    np.savez(bundle / PRED, clean=np.array([{"a": 1}] * 8, dtype=object), **{KEY: np.zeros(8, np.int64)})
    rehash(bundle, manifest, PRED)
    assert_refused(bundle, f"{bundle}/{PRED}: clean: dtype object, expected int64; {FIX}")


def test_hostile_manifests_open_nothing_outside_the_bundle(bundle, manifest):
    """Every trick at once, one per run; the audit hook sees every open() of this process."""
    (bundle / "models" / "link.tflite").symlink_to(bundle.parent / "outside" / "evil.tflite")
    (bundle / "data" / "link.npz").symlink_to(bundle.parent / "outside" / "secret.npz")
    evil, secret = sha256(bundle.parent / "outside" / "evil.tflite"), sha256(bundle.parent / "outside" / "secret.npz")
    tricks = [("file", "models/link.tflite", evil), ("predictions", "data/link.npz", secret),
              ("adversarial", "data/link.npz", secret), ("file", "/etc/passwd", evil),
              ("predictions", "../outside/secret.npz", secret)]  # fmt: skip
    for key, path, digest in tricks:
        forged = json.loads(json.dumps(manifest))
        forged["models"][0][key] = path
        forged["files"][path] = digest  # a consistent forger records the bait's own sha256
        write_manifest(bundle, forged)
        code, out, err, outside = run_validator(bundle)
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (path, out, err)
        assert outside == [], (path, outside)


def test_the_audit_hook_sees_a_read_outside_the_bundle(bundle):
    with opened_files() as opened:
        (bundle.parent / "outside" / "secret.npz").read_bytes()
        (bundle / MODEL).read_bytes()
    assert outside_reads(opened, bundle) == [os.path.realpath(bundle.parent / "outside" / "secret.npz")]


def test_names_are_free_text_and_file_names_are_made_safe(bundle, manifest):
    entry = manifest["models"][0]
    entry.update(model="resnet 20 (pgd)", compression="prune(magnitude,0.5)+int8", defense="trades(beta=6)")
    write_manifest(bundle, manifest)
    code, out, err, outside = run_validator(bundle)
    assert code == 0 and "ok   resnet 20 (pgd) [fp32]" in out, out + err
    entry["model"] = "two\nlines"
    write_manifest(bundle, manifest)
    problem = "'two\\nlines' is not printable text of 1 to 200 characters"
    assert_refused(bundle, f"{bundle}/manifest.json: models[0].model: {problem}; {FIX}")
    assert file_stem("cnn") == "cnn" and file_stem("prune+int8_v1.2") == "prune+int8_v1.2"
    stems = {file_stem(n) for n in ("resnet 20 (pgd)", "resnet_20__pgd_", "../x", ".hidden", "")}
    assert len(stems) == 5 and all(PART.fullmatch(s) for s in stems)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"(" * 300, "not a readable npy array"),
        (b"{'descr': '<i8', 'fortran_order': False, 'shape': (-8,), }", "shape (-8,) has a negative dimension"),
        (b"{'descr': '|O', 'fortran_order': False, 'shape': (8,), }", "dtype object, expected int64"),
    ],
)
def test_a_garbage_npy_header_is_a_one_line_error(bundle, manifest, header, problem):
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    raw = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64)
    with zipfile.ZipFile(bundle / PRED, "w") as zf:
        zf.writestr("clean.npy", raw)
    rehash(bundle, manifest, PRED)
    code, out, err, outside = run_validator(bundle)
    assert code == 2 and err.startswith(f"error: {bundle}/{PRED}: clean: {problem}") and err.count("\n") == 1, err


def test_a_listed_but_broken_model_is_a_one_line_error(bundle, manifest):
    (bundle / MODEL).write_bytes(b"not a flatbuffer" * 8)
    rehash(bundle, manifest, MODEL)
    code, out, err, outside = run_validator(bundle)
    assert code == 2 and err.startswith(f"error: {bundle}/{MODEL}: models[0].file: not a loadable TFLite model (")
    assert err.endswith(f"; {FIX}\n") and err.count("\n") == 1 and outside == []
    assert not (bundle / "validation").exists()
