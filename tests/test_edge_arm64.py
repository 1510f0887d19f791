"""tools/edge_arm64.py and tools/edge_arm64_matrix.py without network or qemu: the OS and runtime choices (cache
stamps, Python per OS, one site per runtime, pins), the executorch site (torch and what it loads, no TFLite
runtime), the skip reason when pip has no wheel (a fake pip), the matrix's verdicts (a validator killed by a
signal included), models-run/skipped counts and table. The slow test runs the emulated Pythons only where their
roots are already cached."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))
import edge_arm64 as arm  # noqa: E402
import edge_arm64_matrix as matrix  # noqa: E402

NO_WHEEL = (
    "ERROR: Could not find a version that satisfies the requirement tflite-runtime==2.14.0 (from versions: none)\n"
    "ERROR: No matching distribution found for tflite-runtime==2.14.0\n"
)


class FakePip:
    """Stands in for ``subprocess.run`` in edge_arm64: records pip calls, fails those naming ``missing``; a
    ``download`` leaves one empty ``.whl`` per requirement in ``--dest``."""

    def __init__(self, missing: str | None = None, stderr: str = NO_WHEEL) -> None:
        self.calls: list[list[str]] = []
        self.missing, self.stderr = missing, stderr

    def __call__(self, cmd, **kwargs):
        cmd = [str(c) for c in cmd]
        self.calls.append(cmd)
        if self.missing and any(self.missing in c for c in cmd):
            return subprocess.CompletedProcess(cmd, 1, "", self.stderr)
        if "download" in cmd:
            dest = Path(cmd[cmd.index("--dest") + 1])
            for req in cmd[cmd.index("--dest") + 2 :]:
                (dest / f"{req.split('==')[0]}-0-py3-none-any.whl").touch()
        return subprocess.CompletedProcess(cmd, 0, "", "")


def _fake_root(tmp_path: Path, python: str = "3.13") -> Path:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    for name in (f"python{python}", f"python{python}-config", "python3", "python3.9"):
        (root / "usr/bin" / name).touch()
    return root


@pytest.fixture
def emulated(monkeypatch):
    """The emulated probe answers aarch64; returns the list of probes it saw."""
    probes: list[list[str]] = []

    def run_python(root, site, args, **kwargs):
        probes.append(args)
        return subprocess.CompletedProcess(args, 0, "aarch64\n", "")

    monkeypatch.setattr(arm, "run_python", run_python)
    return probes


def test_python_glibc_and_debs_follow_the_os():
    bookworm, trixie = arm.OSES["bookworm"], arm.OSES["trixie"]
    assert (bookworm.python, trixie.python) == ("3.11", "3.13")
    assert "python3.11" in bookworm.debs and "python3.13" in trixie.debs
    assert bookworm.platforms[0] == "manylinux_2_36_aarch64" and trixie.platforms[0] == "manylinux_2_41_aarch64"
    assert "manylinux_2_17_aarch64" in trixie.platforms and trixie.platforms[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_37_aarch64" not in bookworm.platforms  # no wheel bookworm's glibc cannot load


def test_stamps_and_roots_are_per_os(tmp_path):
    stamps = {name: arm._root_stamp(spec) for name, spec in arm.OSES.items()}
    assert stamps["bookworm"] != stamps["trixie"]
    assert stamps["trixie"].startswith("trixie python3.13 ") and "python3.13" in stamps["trixie"]
    assert arm.root_dir(tmp_path, "bookworm") != arm.root_dir(tmp_path, "trixie")
    site_stamp = arm._site_stamp(arm.OSES["trixie"], ["ai-edge-litert==2.3.0", "numpy==2.4.6"])
    assert site_stamp.startswith("trixie cp313 ") and "ai-edge-litert==2.3.0" in site_stamp
    assert arm.site_dir(tmp_path, "tflite-runtime") != arm.site_dir(tmp_path, "ai-edge-litert")


def test_a_cached_root_is_reused_only_for_its_own_os(tmp_path, monkeypatch):
    monkeypatch.setattr(arm, "available", lambda: None)
    monkeypatch.setattr(arm.os, "geteuid", lambda: 1000)  # a rebuild would need root: it raises instead
    root = arm.root_dir(tmp_path, "trixie")
    root.mkdir(parents=True)
    arm._ready(root).write_text(arm._root_stamp(arm.OSES["trixie"]))
    assert arm.prepare_root(tmp_path, "trixie") == root
    arm._ready(root).write_text(arm._root_stamp(arm.OSES["bookworm"]))  # the other OS's stamp: stale
    with pytest.raises(RuntimeError, match="needs root"):
        arm.prepare_root(tmp_path, "trixie")


def test_the_single_os_bookworm_root_is_adopted(tmp_path):
    old = tmp_path / "arm64-root"
    (old / "opt/site-packages/numpy").mkdir(parents=True)
    (old / "usr/bin").mkdir(parents=True)
    (tmp_path / "arm64-root.ready").write_text("bookworm debs=python3.11,libstdc++6 wheels=ai-edge-litert numpy\n")
    arm._adopt_legacy(tmp_path)
    new = arm.root_dir(tmp_path, "bookworm")
    assert (new / "usr/bin").is_dir() and not old.exists() and not (new / "opt/site-packages").exists()
    assert arm._ready(new).read_text() == arm._root_stamp(arm.OSES["bookworm"])
    assert not (tmp_path / "arm64-root.ready").exists()


def test_no_wheel_for_the_os_python_is_a_one_line_skip(tmp_path, monkeypatch, emulated):
    pip = FakePip(missing="tflite-runtime")
    monkeypatch.setattr(arm.subprocess, "run", pip)
    with pytest.raises(arm.NoWheel) as err:
        arm.prepare_site(_fake_root(tmp_path), "trixie", "tflite-runtime")
    reason = str(err.value)
    assert "\n" not in reason and "CPython 3.13" in reason
    assert "tflite-runtime==2.14.0 (from versions: none)" in reason  # pip's own words, not a hard-coded table
    download = pip.calls[0]
    assert "download" in download and "--python-version=3.13" in download and "--only-binary=:all:" in download
    assert "--platform=manylinux_2_41_aarch64" in download and "--implementation=cp" in download
    assert len(pip.calls) == 1 and not emulated  # nothing installed, nothing run


OFFLINE = "WARNING: Retrying (Retry(total=4, connect=None)) after connection broken by 'NewConnectionError'\n"


@pytest.mark.parametrize(
    ("stderr", "match"),
    [("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device\n", "No space left"),
     (OFFLINE + NO_WHEEL, "No matching distribution")],  # an unreachable index is no answer: not a skip
)  # fmt: skip
def test_any_other_pip_failure_is_an_error(tmp_path, monkeypatch, emulated, stderr, match):
    monkeypatch.setattr(arm.subprocess, "run", FakePip(missing="tflite-runtime", stderr=stderr))
    with pytest.raises(RuntimeError, match=match) as err:
        arm.prepare_site(_fake_root(tmp_path), "bookworm", "tflite-runtime")
    assert not isinstance(err.value, arm.NoWheel)


def test_one_site_per_runtime_holding_only_that_runtime(tmp_path, monkeypatch, emulated):
    pip = FakePip()
    monkeypatch.setattr(arm.subprocess, "run", pip)
    root = _fake_root(tmp_path, "3.11")
    site = arm.prepare_site(root, "bookworm", "tflite-runtime")
    assert site == root / "opt" / "site-tflite-runtime"
    install = next(c for c in pip.calls if "install" in c)
    assert install[install.index("--target") + 1] == str(site) and "--python-version=3.11" in install
    assert "tflite-runtime==2.14.0" in install and "numpy==1.26.4" in install
    assert not any("ai-edge-litert" in c for c in install)
    assert "import importlib.util" in emulated[0][1] and "'ai_edge_litert'" in emulated[0][1]  # must not import
    calls = len(pip.calls)
    assert arm.prepare_site(root, "bookworm", "tflite-runtime") == site and len(pip.calls) == calls  # cached


def test_the_host_pins_apply_to_bare_wheel_names(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# pins\nai-edge-litert==2.3.0\nnumpy==2.4.6  # numeric\ntorch==2.14.1\n"
                           "Jinja2==3.1.6\ntyping_extensions==4.12.2\nruamel.yaml==0.19.1\n")  # fmt: skip
    assert arm.pinned(["ai-edge-litert", "numpy"], constraints) == ["ai-edge-litert==2.3.0", "numpy==2.4.6"]
    assert arm.pinned(["jinja2", "typing-extensions", "ruamel.yaml", "torch"], constraints) == [
        "Jinja2==3.1.6",
        "typing_extensions==4.12.2",
        "ruamel.yaml==0.19.1",
        "torch==2.14.1",
    ]  # PEP 503 names
    assert arm.pinned(["tflite-runtime==2.14.0", "numpy==1.26.4"], constraints) == ["tflite-runtime==2.14.0",
                                                                                     "numpy==1.26.4"]  # fmt: skip
    assert arm.pinned(["numpy"], tmp_path / "none.txt") == ["numpy"]


def test_run_python_runs_the_roots_python(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(arm.subprocess, "run", lambda cmd, env, **kw: seen.update(cmd=cmd, env=env))
    root, extra = _fake_root(tmp_path, "3.13"), tmp_path / "extra"
    arm.run_python(root, root / "opt/site-x", ["-c", "pass"], extra_pythonpath=[extra], cpu="cortex-a76")
    assert seen["cmd"][:5] == [arm.QEMU, "-cpu", "cortex-a76", "-L", str(root.resolve())]
    assert seen["cmd"][5] == str(root.resolve() / "usr/bin/python3.13") and seen["cmd"][6:] == ["-c", "pass"]
    assert seen["env"]["PYTHONPATH"].split(":") == [str((root / "opt/site-x").resolve()), str(extra.resolve())]


def _validator(results: dict):
    """A fake emulated validator: (os python, runtime module) -> (exit code, failures); writes CSV and JSON."""

    def run_python(root, site, args, cpu, cwd, **kwargs):
        rc, failures, module = results[(root.name, site.name)]
        out = Path(cwd) / args[args.index("--out") + 1]
        out.parent.mkdir(exist_ok=True)
        out.write_text("run_id,metric\nx,clean_acc\nx,size_bytes\nx,robust_acc\n")
        env = {"runtime": module, "runtime_version": "+".join(["9.9"] * len(module.split("+"))), "python": "3.11.2"}
        if "+" in module:  # a bundle with an ONNX model: onnxruntime is not in the site
            env["skipped"] = {"m.fp32.onnx": "no ONNX runtime here (pip install onnxruntime)"}
        out.with_suffix(".json").write_text(json.dumps({"environment": env, "failures": failures}))
        return subprocess.CompletedProcess(args, rc, "", "")

    return run_python


def test_matrix_verdicts_skips_and_table(tmp_path, monkeypatch):
    def prepare_site(root, os_name, runtime):
        if (os_name, runtime) == ("trixie", "tflite-runtime"):
            raise arm.NoWheel("pip finds no wheel for CPython 3.13: ...")
        return root / f"site-{runtime}"

    miss = {"m.int8": ["clean_acc 0.88, expected 0.86 +- 0.01"]}
    results = {("bookworm", "site-ai-edge-litert"): (0, {}, "ai_edge_litert"),
               ("bookworm", "site-tflite-runtime"): (1, miss, "tflite_runtime"),
               ("trixie", "site-ai-edge-litert"): (0, {}, "tflite_runtime+onnxruntime")}  # fmt: skip
    monkeypatch.setattr(arm, "prepare_root", lambda cache, os_name: tmp_path / os_name)
    monkeypatch.setattr(arm, "prepare_site", prepare_site)
    monkeypatch.setattr(arm, "run_python", _validator(results))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    out = matrix.run_matrix(bundle, tmp_path, list(arm.OSES), ["ai-edge-litert", "tflite-runtime"], ["cortex-a72"])
    assert [o.result.split(":")[0].split(" ")[0] for o in out] == ["pass", "FAIL", "FAIL", "skip"]
    assert out[0].rows == 3 and out[0].runtime == "ai-edge-litert 9.9" and not out[0].gates
    assert out[0].models == "1 run, 0 skipped (3 rows)" and out[3].models == "-"
    assert "reported, not gating" in out[1].result and "clean_acc 0.88" in out[1].result and not out[1].gates
    assert "used tflite_runtime+onnxruntime, not ai_edge_litert" in out[2].result and out[2].gates  # wrong one
    assert out[3].result.startswith("skip: pip finds no wheel") and out[3].rows is None and not out[3].gates
    assert (bundle / "validation/arm64-bookworm-tflite-runtime-pi4.csv").is_file()
    results[("trixie", "site-ai-edge-litert")] = (0, {}, "ai_edge_litert+onnxruntime")
    mixed = matrix.run_matrix(bundle, tmp_path, ["trixie"], ["ai-edge-litert"], ["cortex-a76"])[0]
    assert mixed.result.startswith("pass; 1 model(s) skipped: no ONNX runtime") and not mixed.gates
    assert mixed.runtime == "ai-edge-litert 9.9"
    table = matrix.format_table(out)
    assert table.count("\n") == 2 + len(out) and "| trixie | 3.13 | tflite-runtime | cortex-a72 | skip:" in table


def test_matrix_cli_exit_codes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(arm, "available", lambda: None)
    gating = [matrix.Outcome("bookworm", "3.11", "ai-edge-litert", "cortex-a72", "FAIL: x", gates=True)]
    monkeypatch.setattr(matrix, "run_matrix", lambda *a: gating)
    assert matrix.main([str(tmp_path), "--os", "bookworm"]) == 1
    monkeypatch.setattr(matrix, "run_matrix", lambda *a: [matrix.Outcome("trixie", "3.13", "t", "c", "skip: no")])
    assert matrix.main([str(tmp_path)]) == 0
    monkeypatch.setattr(arm, "available", lambda: "qemu-aarch64-static not found")
    assert matrix.main([str(tmp_path)]) == 3 and matrix.main([str(tmp_path), "--allow-skip"]) == 0
    assert "SKIP: qemu-aarch64-static not found" in capsys.readouterr().out


def test_single_run_cli_skips_a_runtime_without_wheel(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(arm, "available", lambda: None)
    monkeypatch.setattr(arm, "prepare_root", lambda cache, os_name: tmp_path)

    def no_wheel(root, os_name, runtime):
        raise arm.NoWheel("pip finds no wheel")

    monkeypatch.setattr(arm, "prepare_site", no_wheel)
    argv = ["--os", "trixie", "--runtime", "tflite-runtime", "--", "-c", "pass"]
    assert arm.main(argv) == 3 and arm.main(["--allow-skip", *argv]) == 0
    assert "SKIP: tflite-runtime on trixie: pip finds no wheel" in capsys.readouterr().out


def test_the_executorch_site_holds_torch_and_no_tflite_runtime(tmp_path, monkeypatch, emulated):
    pip = FakePip()
    monkeypatch.setattr(arm.subprocess, "run", pip)
    root = _fake_root(tmp_path, "3.13")
    site = arm.prepare_site(root, "trixie", "executorch")
    assert site == root / "opt" / "site-executorch"
    wheels = arm.pinned(arm.EXECUTORCH_WHEELS)
    assert {w.split("==")[0] for w in wheels[:3]} == {"executorch", "torch", "numpy"}
    assert any(w.startswith("nvidia-cuda-runtime") for w in wheels)  # PyPI's aarch64 torch links CUDA's
    download, install = pip.calls  # every wheel first (a missing one is a skip), then those files alone
    assert "download" in download and "--no-deps" in download and download[-len(wheels) :] == wheels
    assert "--python-version=3.13" in download and "--platform=manylinux_2_28_aarch64" in download
    assert "install" in install and {"--no-deps", "--no-index"} <= set(install)
    assert install[install.index("--target") + 1] == str(site)
    files = [Path(c).name for c in install if c.endswith(".whl")]
    assert len(files) == len(wheels) and "torch-0-py3-none-any.whl" in files
    assert not any("litert" in c or "tflite" in c for call in pip.calls for c in call)
    assert "numpy, torch, executorch.runtime;" in emulated[0][1]
    assert "'ai_edge_litert', 'tflite_runtime'" in emulated[0][1]  # must not be importable
    stamp = arm._ready(site).read_text()
    assert stamp == arm._site_stamp(arm.OSES["trixie"], wheels) and stamp.startswith("trixie cp313 wheels=")
    assert not list(site.parent.glob(".wheels-*"))  # the downloads are gone
    assert arm.prepare_site(root, "trixie", "executorch") == site and len(pip.calls) == 2  # cached


def test_no_torch_wheel_is_a_one_line_executorch_skip(tmp_path, monkeypatch, emulated, capsys):
    stderr = NO_WHEEL.replace("tflite-runtime==2.14.0", "torch==2.14.1")
    pip = FakePip(missing="torch==", stderr=stderr)
    monkeypatch.setattr(arm.subprocess, "run", pip)
    root = _fake_root(tmp_path, "3.11")
    with pytest.raises(arm.NoWheel, match=r"CPython 3\.11: .*torch==2\.14\.1 \(from versions: none\)") as err:
        arm.prepare_site(root, "bookworm", "executorch")
    assert "\n" not in str(err.value) and len(pip.calls) == 1 and not emulated  # nothing installed or run
    assert not arm.site_dir(root, "executorch").exists()
    monkeypatch.setattr(arm, "available", lambda: None)
    monkeypatch.setattr(arm, "prepare_root", lambda cache, os_name: root)
    assert arm.main(["--runtime", "executorch", "--", "-c", "pass"]) == 3
    assert "SKIP: executorch on bookworm: pip finds no" in capsys.readouterr().out


def _executorch_validator(rc: int, failures: dict | None = None):
    """A fake emulated validator in the executorch site: 2 .pte models run, 2 .tflite ones skipped."""

    def run_python(root, site, args, cpu, cwd, **kwargs):
        out = Path(cwd) / args[args.index("--out") + 1]
        out.parent.mkdir(exist_ok=True)
        rows = [f"r,{m},{c},executorch,{k}" for m, c in (("a", "none"), ("a", "int8")) for k in ("clean_acc", "x")]
        out.write_text("\n".join(["run_id,model,compression,format,metric", *rows]) + "\n")
        skip = "no TFLite runtime here (pip install ai-edge-litert)"
        env = {"runtime": "executorch", "runtime_version": "1.5.1", "python": "3.13.5",
               "skipped": {"a [fp32]": skip, "a [int8]": skip}}  # fmt: skip
        if rc >= 0:
            out.with_suffix(".json").write_text(json.dumps({"environment": env, "failures": failures or {}}))
        return subprocess.CompletedProcess(args, rc, "", "qemu: uncaught target signal 4 (Illegal instruction)\n")

    return run_python


@pytest.mark.parametrize(
    ("rc", "failures", "result", "gates"),
    [(0, None, "pass; 2 model(s) skipped: no TFLite runtime", False),
     (1, {"a [int8 executorch]": ["clean_acc 0.5, expected 0.9"]}, "FAIL: 1 model(s) missed, e.g. a [int8 ", True),
     (-4, None, "FAIL: killed by SIGILL (signal 4): qemu: uncaught target signal 4", True)],
)  # fmt: skip
def test_executorch_rows_count_models_and_gate(tmp_path, monkeypatch, rc, failures, result, gates):
    monkeypatch.setattr(arm, "prepare_root", lambda cache, os_name: tmp_path / os_name)
    monkeypatch.setattr(arm, "prepare_site", lambda root, os_name, runtime: root / f"site-{runtime}")
    monkeypatch.setattr(arm, "run_python", _executorch_validator(rc, failures))
    (tmp_path / "bundle").mkdir()
    out = matrix.run_matrix(tmp_path / "bundle", tmp_path, ["trixie"], ["executorch"], ["cortex-a72"])[0]
    assert out.result.startswith(result) and out.gates is gates
    assert out.runtime == ("executorch 1.5.1" if rc >= 0 else "executorch")
    assert out.models == ("2 run, 2 skipped (4 rows)" if rc >= 0 else "2 run, 0 skipped (4 rows)")
    assert "| trixie | " in matrix.format_table([out]) and (tmp_path / "bundle/validation").is_dir()


def test_a_runtime_none_of_whose_models_the_bundle_holds_is_skipped_unbuilt(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(arm, "prepare_root", lambda cache, os_name: tmp_path / os_name)
    monkeypatch.setattr(arm, "prepare_site", lambda root, os_name, runtime: built.append(runtime) or root / runtime)
    monkeypatch.setattr(arm, "run_python", _validator({("bookworm", "ai-edge-litert"): (0, {}, "ai_edge_litert")}))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"models": [{"file": "models/m.int8.tflite"}]}))
    out = matrix.run_matrix(bundle, tmp_path, ["bookworm"], ["ai-edge-litert", "executorch"], list(arm.CPUS))
    assert [o.result for o in out[2:]] == ["skip: the bundle has no .pte model"] * 2 and not any(o.gates for o in out)
    assert built == ["ai-edge-litert"]  # no torch site built for a TFLite-only bundle


CACHE = Path(__file__).resolve().parents[1] / ".nox" / "arm64"


@pytest.mark.slow
@pytest.mark.parametrize("os_name", list(arm.OSES))
def test_emulated_python_of_a_cached_root(os_name):
    """Runs qemu only on a root and site ``nox -s edge_arm64`` already built (never downloads)."""
    if arm.available():
        pytest.skip(arm.available())
    root = arm.root_dir(CACHE, os_name)
    site = arm.site_dir(root)
    spec = arm.OSES[os_name]
    if not arm._ready(root).is_file() or arm._ready(root).read_text() != arm._root_stamp(spec):
        pytest.skip(f"no cached {os_name} root: nox -s edge_arm64 builds it")
    if not arm._ready(site).is_file():
        pytest.skip(f"no cached {os_name} ai-edge-litert site: nox -s edge_arm64 builds it")
    probe = "import platform, sys, ai_edge_litert.interpreter; print(platform.machine(), *sys.version_info[:2])"
    proc = arm.run_python(root, site, ["-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["aarch64", *spec.python.split(".")]
