"""``robustbench-cnn zoo list``: every entry with its dataset, preprocessing, published figures and
provenance, and, given the zoo folder, whether its file is there and is the published one."""

from __future__ import annotations

from pathlib import Path

from robustbench_cnn.zoo import ZOO, ZooError, locate
from robustbench_cnn.zoo.entries import Figure, ZooEntry


def _figure(f: Figure) -> str:
    protocol = f", {f.images:,} images" if f.kind != "clean" else ""
    kind = {"clean": "clean", "attack": "robust", "best_attack": "robust", "certified": "certified >="}[f.kind]
    where = f" ({f.protocol or f.label}; {f.norm} eps {f.eps:g})" if f.kind != "clean" else ""
    return f"{kind} {100 * f.value:.2f}%{where}{protocol}"


def _state(e: ZooEntry, folder: Path | None) -> str:
    if folder is None:
        return ""
    try:
        locate(e.name, folder)
    except ZooError as exc:
        return "  file: " + str(exc).split(": ", 1)[-1]
    return "  file: present, sha256 verified"


def render_list(folder: Path | None) -> str:
    """The zoo as text, one block per entry."""
    lines = []
    for e in ZOO.values():
        what = f"{e.arch}{dict(e.params) or ''}" if e.kind == "torch" else "edge build (no torch weights)"
        lines.append(f"zoo:{e.name}  [{e.dataset}] {what}; preprocess {e.preprocess.describe()}")
        lines.append(f"  published: {'; '.join(_figure(f) for f in e.figures)}")
        lines.append(f"  {e.note}" if e.note else "")
        lines.append(f"  source: {e.source} ({e.license}); file {e.file}, sha256 {e.sha256[:16]}...")
        state = _state(e, folder)
        if state:
            lines.append(state)
    if folder is None:
        lines.append("(pass --zoo-dir DIR or set $ROBUSTBENCH_CNN_ZOO to check the files)")
    return "\n".join(line for line in lines if line) + "\n"
