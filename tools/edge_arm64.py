"""Run a torch-free Python on arm64 under qemu user-mode emulation (no binfmt_misc, no chroot).

``prepare_root`` builds a cached Debian arm64 root per OS (``--os bookworm``: Python 3.11, glibc 2.36;
``--os trixie``: Debian 13, Python 3.13, glibc 2.41): ``debootstrap --foreign`` downloads the packages, every
downloaded ``.deb`` is unpacked with ``dpkg-deb`` on the host (the chroot second stage would need binfmt_misc,
which containers often lack; maintainer scripts are not needed to run Python), and a fake Cortex-A72
``/proc/cpuinfo`` is written (LiteRT crashes under qemu reading the host's x86 one). ``prepare_site`` installs
one runtime (``--runtime ai-edge-litert|tflite-runtime|executorch``) and numpy as aarch64 wheels with the host's
pip into ``ROOT/opt/site-<runtime>``: one site per (OS, runtime), so the validator can only import the chosen one.
The executorch site carries torch (ExecuTorch's Python bindings link libtorch) and is kept apart from the
torch-free TFLite sites; PyPI's aarch64 torch is its CUDA 13 build, whose libraries link the CUDA runtime, so
the NVIDIA library wheels they load are in that site too (no GPU is used).
``run_python`` runs ``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.N``; with ``-L`` qemu looks up absolute
paths in ROOT first and falls back to the host, so host files (models, the repo) stay readable.

Usage: python tools/edge_arm64.py [--os OS] [--runtime RT] [--cpu CPU] [--allow-skip] -- ARGS...
(``tools/edge_arm64_matrix.py`` validates a bundle for every OS x runtime x core.)
Host needs: root (first build only), ``apt-get install qemu-user-static debootstrap``, pip, network.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("edge_arm64")

QEMU = "qemu-aarch64-static"
MIRROR = "http://deb.debian.org/debian"
UNPACK = 'dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink -C "$2" -f -'  # as debootstrap does
CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"  # pins ai-edge-litert and numpy
DEFAULT_CACHE = Path.home() / ".cache" / "robustbench-cnn"
CPU_BLOCK = """processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""


@dataclass(frozen=True)
class OsSpec:
    """A Debian release: its Python (the one Raspberry Pi OS of that release ships) and glibc."""

    name: str
    python: str
    glibc: tuple[int, int]

    @property
    def debs(self) -> tuple[str, ...]:
        """The packages debootstrap adds to minbase."""
        return (f"python{self.python}", "libstdc++6")

    @property
    def platforms(self) -> list[str]:
        """pip ``--platform`` tags this glibc runs: manylinux_2_<minor> down to 2_17, then manylinux2014."""
        major, minor = self.glibc
        return [f"manylinux_{major}_{m}_aarch64" for m in range(minor, 16, -1)] + ["manylinux2014_aarch64"]


@dataclass(frozen=True)
class RuntimeSpec:
    """A model runtime package: its module, the wheels installed with it, and whether its misses gate.

    ``no_deps``: the wheels are the whole site, pip resolves nothing (executorch and torch declare what their
    export and GPU paths need; the site holds what the runtime path imports); ``probe``: the modules the site
    check imports (default ``<module>.interpreter``); ``suffix``: the model files it runs.
    """

    name: str
    module: str
    wheels: tuple[str, ...]
    gating: bool
    note: str = ""
    no_deps: bool = False
    probe: str = ""
    suffix: str = ".tflite"

    @property
    def imports(self) -> str:
        """The modules the emulated site check imports."""
        return self.probe or f"{self.module}.interpreter"


OSES = {"bookworm": OsSpec("bookworm", "3.11", (2, 36)), "trixie": OsSpec("trixie", "3.13", (2, 41))}
LEGACY = "reported, not gating: 2.14's int8 kernels are older than the reference's"  # as in `nox -s edge`
# What `import torch, executorch.runtime` loads (found by trying under qemu), pinned by constraints.txt. PyPI's
# aarch64 torch 2.14.1 is the CUDA 13 build: libtorch_cpu.so and libtorch_cuda.so link (DT_NEEDED) cudart,
# cupti, nvrtc, cublas(Lt), cudnn, cufft, cufile, curand, cusparse(Lt), nccl and nvshmem (cusparse: nvJitLink);
# cusolver (CUDA linalg, loaded on use) and nvtx are left out. No GPU is touched.
# fmt: off
TORCH_CUDA_LIBS = ("nvidia-cuda-runtime", "nvidia-cuda-cupti", "nvidia-cuda-nvrtc", "nvidia-cublas",
                   "nvidia-cudnn-cu13", "nvidia-cufft", "nvidia-cufile", "nvidia-curand", "nvidia-cusparse",
                   "nvidia-cusparselt-cu13", "nvidia-nccl-cu13", "nvidia-nvjitlink", "nvidia-nvshmem-cu13")
EXECUTORCH_WHEELS = ("executorch", "torch", "numpy", "typing_extensions", "sympy", "mpmath", "filelock", "networkx",
                     "jinja2", "markupsafe", "fsspec", "ruamel.yaml", "flatbuffers", "tabulate", *TORCH_CUDA_LIBS)
# fmt: on
RUNTIMES = {
    "ai-edge-litert": RuntimeSpec("ai-edge-litert", "ai_edge_litert", ("ai-edge-litert", "numpy"), True),
    "tflite-runtime": RuntimeSpec(
        "tflite-runtime", "tflite_runtime", ("tflite-runtime==2.14.0", "numpy==1.26.4"), False, LEGACY
    ),
    "executorch": RuntimeSpec(
        "executorch",
        "executorch",
        EXECUTORCH_WHEELS,
        True,
        no_deps=True,
        probe="torch, executorch.runtime",
        suffix=".pte",
    ),
}
CPUS = {"cortex-a72": "pi4", "cortex-a76": "pi5"}
DEFAULT_OS, DEFAULT_RUNTIME, DEFAULT_CPU = "bookworm", "ai-edge-litert", "cortex-a72"
UNREACHABLE = ("Retrying (", "Could not fetch URL", "NewConnectionError", "Failed to establish a new connection")
LEGACY_STAMP = "bookworm debs=python3.11,libstdc++6 "  # the single-OS layout: CACHE/arm64-root (+ .ready)


class NoWheel(RuntimeError):
    """pip found no aarch64 wheel for this OS's Python: the combination is skipped, not failed."""


def available() -> str | None:
    """Return None if arm64 emulation can run here, else a one-line reason."""
    if platform.system() != "Linux":
        return f"arm64 emulation needs a Linux host, not {platform.system()}"
    for tool in (QEMU, "debootstrap", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} not found: apt-get install qemu-user-static debootstrap"
    return None


def root_dir(cache_dir: Path, os_name: str = DEFAULT_OS) -> Path:
    """Return where ``prepare_root`` keeps the arm64 root of ``os_name`` (its stamp sits beside it)."""
    return Path(cache_dir).resolve() / f"arm64-{os_name}"


def site_dir(root: Path, runtime: str = DEFAULT_RUNTIME) -> Path:
    """Return the directory holding the aarch64 wheels ``prepare_site`` installs for ``runtime``."""
    return Path(root) / "opt" / f"site-{runtime}"


def _ready(path: Path) -> Path:
    """The stamp file beside ``path`` (a root or site): its cache key, written once it is complete."""
    return path.with_name(path.name + ".ready")


def _run(step: str, cmd: Sequence[str | Path], **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure raise a one-line RuntimeError naming ``step``, the command and its last output."""
    line = shlex.join(str(c) for c in cmd)
    log.debug("%s: %s", step, line)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"{step} failed (exit {proc.returncode}): {line}: {tail}")
    return proc


def _root_stamp(spec: OsSpec) -> str:
    """Return the root's cache key (the OS, its Python and debs): a rebuild happens whenever it changes."""
    return f"{spec.name} python{spec.python} debs={','.join(spec.debs)}\n"


def _site_stamp(spec: OsSpec, wheels: Sequence[str]) -> str:
    """Return a site's cache key: the OS, the Python its wheels are for, and the wheel specs."""
    return f"{spec.name} cp{spec.python.replace('.', '')} wheels={' '.join(wheels)}\n"


def _adopt_legacy(cache_dir: Path) -> None:
    """Rename a bookworm root of the single-OS layout (``arm64-root``) to ``arm64-bookworm``; its site is redone."""
    old, new = Path(cache_dir).resolve() / "arm64-root", root_dir(cache_dir, "bookworm")
    marker = _ready(old)
    if new.exists() or not old.is_dir() or not marker.is_file() or not marker.read_text().startswith(LEGACY_STAMP):
        return
    log.info("adopting the bookworm root %s as %s", old, new)
    old.rename(new)
    shutil.rmtree(new / "opt" / "site-packages", ignore_errors=True)
    _ready(new).write_text(_root_stamp(OSES["bookworm"]))
    marker.unlink()


def prepare_root(cache_dir: Path, os_name: str = DEFAULT_OS) -> Path:
    """Build (once, cached as ``cache_dir/arm64-<os>``) an arm64 root of ``os_name`` with its python3.N.

    Returns the root; ``prepare_site`` adds a runtime. A second call with the same arguments is instant.
    """
    reason = available()
    if reason:
        raise RuntimeError(f"arm64 emulation unavailable: {reason}")
    spec = OSES[os_name]
    _adopt_legacy(cache_dir)
    root = root_dir(cache_dir, os_name)
    marker = _ready(root)
    if marker.is_file() and marker.read_text() == _root_stamp(spec):
        log.debug("%s arm64 root cached at %s", os_name, root)
        return root
    if os.geteuid() != 0:
        raise RuntimeError(f"building the arm64 root needs root (debootstrap); run once as root or copy {root}")
    start = time.monotonic()
    marker.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    log.info("debootstrap --foreign %s arm64 into %s", os_name, root)
    boot = ["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", f"--include={','.join(spec.debs)}"]
    _run("debootstrap first stage", [*boot, os_name, root, MIRROR])
    debs = sorted((root / "var/cache/apt/archives").glob("*.deb"))
    log.info("unpacking %d .debs with dpkg-deb (instead of the chroot second stage)", len(debs))
    for deb in debs:
        _run(f"unpack {deb.name}", ["bash", "-o", "pipefail", "-c", UNPACK, "unpack", deb, root])
        deb.unlink()
    proc = root / "proc"
    if proc.is_symlink():  # debootstrap links ROOT/proc -> /proc inside containers; never write through it
        proc.unlink()
    proc.mkdir(exist_ok=True)
    (proc / "cpuinfo").write_text("\n".join(CPU_BLOCK.format(n=n) for n in range(4)))
    if not (root / "usr/bin" / f"python{spec.python}").exists():
        raise RuntimeError(f"{os_name} root has no usr/bin/python{spec.python} after unpacking")
    marker.write_text(_root_stamp(spec))
    log.info("%s arm64 root ready in %.0f s: %s", os_name, time.monotonic() - start, root)
    return root


def _norm(name: str) -> str:
    """A distribution name as pip compares them (PEP 503: case and runs of ``-_.`` do not matter)."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def pinned(wheels: Sequence[str], constraints: Path = CONSTRAINTS) -> list[str]:
    """Pin each bare wheel name to its ``name==version`` line in ``constraints`` (the host's pins), if any."""
    pins = {}
    if constraints.is_file():
        for line in constraints.read_text().splitlines():
            name, sep, _ = line.partition("==")
            if sep:
                pins[_norm(name)] = line.split("#")[0].strip()
    return [pins.get(_norm(w), w) if re.fullmatch(r"[A-Za-z0-9._-]+", w) else w for w in wheels]


def _pip(spec: OsSpec, command: str, args: Sequence[str | Path], step: str) -> None:
    """Run the host's ``pip COMMAND`` for aarch64 wheels of ``spec``'s CPython; NoWheel when it finds no wheel."""
    cmd = [sys.executable, "-m", "pip", command, "--quiet", "--disable-pip-version-check", "--only-binary=:all:"]
    cmd += [f"--platform={p}" for p in spec.platforms] + [f"--python-version={spec.python}", "--implementation=cp"]
    line = shlex.join(str(c) for c in [*cmd, *args])
    log.debug("%s: %s", step, line)
    proc = subprocess.run([*cmd, *(str(a) for a in args)], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return
    lines = [ln.removeprefix("ERROR: ").strip() for ln in proc.stderr.splitlines() if ln.startswith("ERROR: ")]
    missing = [ln for ln in lines if ln.startswith("Could not find a version that satisfies")]
    if missing and not any(s in proc.stderr for s in UNREACHABLE):  # an index pip could not read is no answer
        raise NoWheel(f"pip finds no {spec.platforms[0]}..manylinux2014 wheel for CPython {spec.python}: {missing[0]}")
    tail = (lines or proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"{step} failed (exit {proc.returncode}): {line}: {tail}")


def _install(spec: OsSpec, rt: RuntimeSpec, wheels: Sequence[str], site: Path) -> None:
    """pip-install ``wheels`` (aarch64) into ``site``; NoWheel before anything is installed when one is missing.

    A TFLite runtime: its own wheel is downloaded first (missing: a skip), then pip resolves its dependencies.
    A ``no_deps`` runtime: every wheel is downloaded first (one missing: a skip), then installed from those
    files alone. Downloads go beside the site (torch's CUDA libraries are GBs; /tmp may be small).
    """
    with tempfile.TemporaryDirectory(dir=site.parent, prefix=".wheels-") as tmp:
        if not rt.no_deps:
            _pip(spec, "download", ["--no-deps", "--dest", tmp, wheels[0]], f"pip download {wheels[0]}")
            _pip(spec, "install", ["--target", site, *wheels], "pip install aarch64 wheels")
            return
        _pip(spec, "download", ["--no-deps", "--dest", tmp, *wheels], "pip download aarch64 wheels")
        files = sorted(Path(tmp).glob("*.whl"))
        _pip(spec, "install", ["--no-deps", "--no-index", "--target", site, *files], "pip install aarch64 wheels")


def prepare_site(root: Path, os_name: str = DEFAULT_OS, runtime: str = DEFAULT_RUNTIME) -> Path:
    """Install ``runtime`` and numpy (aarch64 wheels) into ``site_dir(root, runtime)`` once; return the site.

    Raises NoWheel (a skip) when pip has no wheel of the runtime (or of one of a ``no_deps`` runtime's wheels)
    for the OS's Python, RuntimeError otherwise.
    """
    spec, rt = OSES[os_name], RUNTIMES[runtime]
    wheels = pinned(rt.wheels)
    site = site_dir(root, runtime)
    marker = _ready(site)
    if marker.is_file() and marker.read_text() == _site_stamp(spec, wheels):
        return site
    marker.unlink(missing_ok=True)
    shutil.rmtree(site, ignore_errors=True)
    site.parent.mkdir(parents=True, exist_ok=True)
    log.info("pip install aarch64 wheels %s for CPython %s into %s", " ".join(wheels), spec.python, site)
    _install(spec, rt, wheels, site)
    others = [r.module for r in RUNTIMES.values() if r.name != runtime]
    probe = (f"import importlib.util as u, platform, numpy, {rt.imports}; "
             f"assert not [m for m in {others!r} if u.find_spec(m)], 'another runtime is importable'; "
             "print(platform.machine())")  # fmt: skip
    check = run_python(root, site, ["-c", probe], capture_output=True, text=True)
    if check.returncode != 0 or check.stdout.strip() != "aarch64":
        tail = (check.stderr.strip() or check.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"emulated python check failed (exit {check.returncode}): {QEMU} -L {root} ...: {tail}")
    marker.write_text(_site_stamp(spec, wheels))
    return site


def python_in(root: Path) -> Path:
    """Return ``ROOT/usr/bin/python3.N``, the root's one versioned Python."""
    found = [p for p in (Path(root) / "usr/bin").glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name)]
    if not found:
        raise RuntimeError(f"no usr/bin/python3.N in {root}: build it with prepare_root")
    return max(found, key=lambda p: int(p.name.split(".")[1]))


def run_python(
    root: Path,
    site: Path,
    args: list[str],
    extra_pythonpath: Iterable[Path] = (),
    env: dict[str, str] | None = None,
    cpu: str = DEFAULT_CPU,
    **kwargs,
) -> subprocess.CompletedProcess:
    """Run ``ROOT/usr/bin/python3.N *args`` under qemu; PYTHONPATH is ``site`` then ``extra_pythonpath``.

    ``env`` entries are added to a copy of ``os.environ`` (host Python variables are dropped); ``kwargs`` go to
    ``subprocess.run`` (e.g. ``capture_output=True, text=True, timeout=600``). The exit code is not checked.
    ``cpu`` is the emulated core: cortex-a72 (Raspberry Pi 4, the default) or cortex-a76 (Pi 5). qemu 7.2's
    default ``max`` core advertises features no Pi has (SVE2, i8mm), and XNNPACK's int8 kernels for them
    gave constant predictions under it while fp32 matched bit for bit.
    """
    root = Path(root).resolve()
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    full_env.update(env or {})
    paths = [Path(site).resolve(), *(Path(p).resolve() for p in extra_pythonpath)]
    full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    full_env["PYTHONNOUSERSITE"] = "1"  # with -L, ~/.local would fall back to the host's (x86) user site
    cmd = [QEMU, "-cpu", cpu, "-L", str(root), str(python_in(root)), *args]
    log.debug("run: %s", shlex.join(cmd))
    return subprocess.run(cmd, env=full_env, check=False, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """CLI: prepare the (OS, runtime) root and run the emulated python with the arguments after ``--``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    parser.add_argument("--allow-skip", action="store_true", help="exit 0 (not 3) when it cannot run: no emulation "
                        "here, or no wheel of the runtime for the OS's Python")  # fmt: skip
    parser.add_argument("--os", default=DEFAULT_OS, choices=list(OSES), help=f"Debian release (default {DEFAULT_OS})")
    parser.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=list(RUNTIMES), help="model runtime "
                        f"package, alone in its site (default {DEFAULT_RUNTIME}; executorch: +torch)")  # fmt: skip
    parser.add_argument(
        "--cpu", default=DEFAULT_CPU, help="emulated core: cortex-a72 (Pi 4, default), cortex-a76 (Pi 5)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then arguments for the arm64 python3.N")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO, format="%(name)s: %(message)s")
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    reason = available()
    if reason:
        sys.stdout.write(f"SKIP: {reason}\n")
        return 0 if ns.allow_skip else 3
    try:
        root = prepare_root(ns.cache_dir, ns.os)
        site = prepare_site(root, ns.os, ns.runtime)
    except NoWheel as err:
        sys.stdout.write(f"SKIP: {ns.runtime} on {ns.os}: {err}\n")
        return 0 if ns.allow_skip else 3
    except RuntimeError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    return run_python(root, site, args, cpu=ns.cpu).returncode


if __name__ == "__main__":
    sys.exit(main())
