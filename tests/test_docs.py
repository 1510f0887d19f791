"""The README is a front door and ``docs/`` the reference: every suite key, CLI flag, results column and
metric is documented there, and every relative link in them resolves."""

from __future__ import annotations

import argparse
import re
import typing
from pathlib import Path

import pydantic
import pytest

from robustbench_cnn.cli.parser import build_parser
from robustbench_cnn.config.spec import SuiteSpec
from robustbench_cnn.contract.schema import COLUMNS, METRICS
from robustbench_cnn.registry import registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = {path.name: path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}
README = (ROOT / "README.md").read_text()


def _models(cls: type, seen: set[type]) -> None:
    """Every pydantic model reachable from ``cls``'s fields (tuples, unions and optionals included)."""
    if not (isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)) or cls in seen:
        return
    seen.add(cls)
    for info in cls.model_fields.values():
        stack = [info.annotation]
        while stack:
            tp = stack.pop()
            stack += typing.get_args(tp)
            _models(tp, seen)


def _suite_fields() -> list[tuple[str, str]]:
    seen: set[type] = set()
    _models(SuiteSpec, seen)
    for kind in ("defenses", "compressors"):
        reg = registry(kind)
        for name in reg.names():
            _models(reg.get(name).spec, seen)
    measures = registry("measures")
    for name in measures.names():  # a plugin measure's own suite table
        _models(measures.get(name).settings, seen)
    return sorted({(cls.__name__, field) for cls in seen for field in cls.model_fields})


def _flags() -> list[str]:
    found: set[str] = set()
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:  # argparse keeps its actions in this one (stable) attribute
            found.update(o for o in action.option_strings if o.startswith("--") and o != "--help")
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
    return sorted(found)


def test_the_readme_is_a_front_door():
    assert len(README.splitlines()) <= 200
    assert "nox -s tests" in README and "docs/" in README


@pytest.mark.parametrize(("cls", "field"), _suite_fields())
def test_every_suite_key_is_documented(cls, field):
    assert re.search(rf"\b{re.escape(field)}\b", DOCS["suite.md"]), f"{cls}.{field} is not in docs/suite.md"


@pytest.mark.parametrize("flag", _flags())
def test_every_cli_flag_is_documented(flag):
    assert re.search(rf"{re.escape(flag)}\b", DOCS["cli.md"]), f"{flag} is not in docs/cli.md"


@pytest.mark.parametrize("name", sorted({*COLUMNS, *METRICS}))
def test_every_column_and_metric_is_documented(name):
    assert re.search(rf"`{re.escape(name)}`", DOCS["results.md"]), f"{name} is not in docs/results.md"


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{name}" for name in DOCS)])
def test_every_relative_link_resolves(page):
    text = (ROOT / page).read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (ROOT / page).parent.joinpath(target).exists(), f"{page} links to missing {target}"
