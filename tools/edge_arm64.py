"""Run a torch-free Python 3.11 on arm64 under qemu user-mode emulation (no binfmt_misc, no chroot).

``prepare_root`` builds a cached Debian bookworm arm64 root: ``debootstrap --foreign`` downloads the packages,
every downloaded ``.deb`` is unpacked with ``dpkg-deb`` on the host (the chroot second stage would need
binfmt_misc, which containers often lack; maintainer scripts are not needed to run Python), a fake Cortex-A72
``/proc/cpuinfo`` is written (LiteRT crashes under qemu reading the host's x86 one), and aarch64 wheels are
installed with the host's pip into ``ROOT/opt/site-packages``. ``run_python`` runs
``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11``; with ``-L`` qemu looks up absolute paths in ROOT
first and falls back to the host, so host files (models, the repo) stay readable.

Usage: python tools/edge_arm64.py [--cache-dir DIR] [--cpu cortex-a72|cortex-a76] [--allow-skip] -- ARGS...
Host needs: root (first build only), ``apt-get install qemu-user-static debootstrap``, pip, network.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger("edge_arm64")

QEMU = "qemu-aarch64-static"
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
DEBS = ("python3.11", "libstdc++6")
WHEELS = ("ai-edge-litert", "numpy")
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64")  # bookworm: glibc 2.36
UNPACK = 'dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink -C "$2" -f -'  # as debootstrap does
SITE_IN_ROOT = "opt/site-packages"
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


def available() -> str | None:
    """Return None if arm64 emulation can run here, else a one-line reason."""
    if platform.system() != "Linux":
        return f"arm64 emulation needs a Linux host, not {platform.system()}"
    for tool in (QEMU, "debootstrap", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} not found: apt-get install qemu-user-static debootstrap"
    return None


def site_dir(root: Path) -> Path:
    """Return the directory holding the aarch64 wheels installed by ``prepare_root``."""
    return root / SITE_IN_ROOT


def _run(step: str, cmd: Sequence[str | Path], **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure raise a one-line RuntimeError naming ``step``, the command and its last output."""
    line = shlex.join(str(c) for c in cmd)
    log.debug("%s: %s", step, line)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"{step} failed (exit {proc.returncode}): {line}: {tail}")
    return proc


def _stamp(wheels: Sequence[str]) -> str:
    """Return the cache key: a rebuild happens whenever it changes."""
    return f"{SUITE} debs={','.join(DEBS)} wheels={' '.join(wheels)}\n"


def prepare_root(cache_dir: Path, wheels: Sequence[str] = WHEELS) -> Path:
    """Build (once, cached under ``cache_dir/arm64-root``) an arm64 root with python3.11 and ``wheels``.

    Returns the root; the wheels live in ``site_dir(root)``. A second call with the same arguments is instant.
    """
    reason = available()
    if reason:
        raise RuntimeError(f"arm64 emulation unavailable: {reason}")
    cache_dir = Path(cache_dir).resolve()
    root, marker = cache_dir / "arm64-root", cache_dir / "arm64-root.ready"
    if marker.is_file() and marker.read_text() == _stamp(wheels):
        log.debug("arm64 root cached at %s", root)
        return root
    if os.geteuid() != 0:
        raise RuntimeError(f"building the arm64 root needs root (debootstrap); run once as root or copy {root}")
    start = time.monotonic()
    marker.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    log.info("debootstrap --foreign %s arm64 into %s", SUITE, root)
    boot = ["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", f"--include={','.join(DEBS)}"]
    _run("debootstrap first stage", [*boot, SUITE, root, MIRROR])
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

    site = site_dir(root)
    log.info("pip install aarch64 wheels %s into %s", " ".join(wheels), site)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:"]
    pip += [f"--platform={p}" for p in PLATFORMS] + ["--python-version=3.11", "--implementation=cp"]
    _run("pip install aarch64 wheels", [*pip, "--target", site, *wheels])
    log.info("checking the emulated interpreter")
    probe = ["-c", "import platform, numpy, ai_edge_litert.interpreter; print(platform.machine())"]
    check = run_python(root, site, probe, capture_output=True, text=True)
    if check.returncode != 0 or check.stdout.strip() != "aarch64":
        tail = (check.stderr.strip() or check.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"emulated python check failed (exit {check.returncode}): {QEMU} -L {root} ...: {tail}")
    marker.write_text(_stamp(wheels))
    log.info("arm64 root ready in %.0f s: %s", time.monotonic() - start, root)
    return root


def run_python(
    root: Path,
    site: Path,
    args: list[str],
    extra_pythonpath: Iterable[Path] = (),
    env: dict[str, str] | None = None,
    cpu: str = "cortex-a72",
    **kwargs,
) -> subprocess.CompletedProcess:
    """Run ``ROOT/usr/bin/python3.11 *args`` under qemu; PYTHONPATH is ``site`` then ``extra_pythonpath``.

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
    cmd = [QEMU, "-cpu", cpu, "-L", str(root), str(root / "usr/bin/python3.11"), *args]
    log.debug("run: %s", shlex.join(cmd))
    return subprocess.run(cmd, env=full_env, check=False, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """CLI: prepare the root and run the emulated python with the arguments after ``--``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    parser.add_argument("--allow-skip", action="store_true", help="exit 0 (not 3) when emulation is unavailable")
    parser.add_argument("--cpu", default="cortex-a72", help="emulated core: cortex-a72 (Pi 4), cortex-a76 (Pi 5)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then arguments for the arm64 python3.11")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO, format="%(name)s: %(message)s")
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    reason = available()
    if reason:
        print(f"SKIP: {reason}")  # noqa: T201
        return 0 if ns.allow_skip else 3
    try:
        root = prepare_root(ns.cache_dir)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        return 2
    return run_python(root, site_dir(root), args, cpu=ns.cpu).returncode


if __name__ == "__main__":
    sys.exit(main())
