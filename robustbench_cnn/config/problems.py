"""Problems found in a suite, as one-line ``field.path: problem; fix`` texts.

pydantic keeps one error per validator call, so a validator that finds several problems raises
them together with :func:`problems`; :func:`problem_lines` expands them again, names every field by
its path in the suite file (``models[2].train.lr``), and adds did-you-mean hints and the TOML type
that was found where another was expected.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from robustbench_cnn.errors import did_you_mean, shown


def problems(found: list[tuple[str, str]]) -> None:
    """Raise every ``(field path relative to this spec, message)`` at once; the suite loader prints
    one line per problem (pydantic keeps only one error per validator, so they travel in ``ctx``)."""
    if found:
        where, what = found[0]
        raise PydanticCustomError("problems", "{first}", {"first": f"{where}: {what}" if where else what,
                                                          "problems": found})  # fmt: skip


def message(err: Any) -> str:
    """One pydantic error as text (several joined by '; ' when a validator raised :func:`problems`)."""
    nested = (err.get("ctx") or {}).get("problems")
    if nested:
        return "; ".join(f"{w}: {m}" if w else m for w, m in nested)
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{msg}; got {toml_type(err.get('input'))}" if err["type"].endswith(("_type", "_parsing")) else msg


def nested(prefix: str, errors: list[Any], spec: type[BaseModel]) -> list[tuple[str, str]]:
    """A plugin spec's errors as problems worded ``prefix.field: problem`` (e.g. ``pgd_at.eps: ...``)."""
    found = []
    for err in errors:
        where = ".".join(str(p) for p in (prefix, *err["loc"]))
        hint = did_you_mean(str(err["loc"][-1]), spec.model_fields) if err["loc"] else ""
        found.append(("", f"{where}: {f'unknown key{hint}' if err['type'] == 'extra_forbidden' else message(err)}"))
    return found


def validated(spec: type[BaseModel], value: Any, prefix: str) -> tuple[Any, list[tuple[str, str]]]:
    """``value`` validated by a plugin's spec class (a defense's, a measure's table), or ``None`` and its
    problems worded ``prefix.field: problem`` (:func:`nested`)."""
    try:
        return spec.model_validate(value), []
    except ValidationError as exc:
        return None, nested(prefix, exc.errors(), spec)


def toml_type(value: Any) -> str:
    """How a parsed TOML value is named in messages: ``the string 'x'``, ``an array``, ..."""
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (dict, "a table"), (list, "an array"))
    if isinstance(value, str):
        return f"the string {shown(value, 40)}"
    return next((name for kind, name in kinds if isinstance(value, kind)), "a date or time")


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _join(base: str, where: str) -> str:
    if not base or not where:
        return base or where or "(top level)"
    return base + where if where.startswith("[") else f"{base}.{where}"


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The spec class that owns the last element of ``loc`` (to list its valid keys)."""
    cls: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        for arg in (ann, *getattr(ann, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                cls = arg
                break
        else:
            return None
    return cls


def _describe(err: dict[str, Any], root: type[BaseModel]) -> list[str]:
    """One line per problem: ``field.path: what is wrong[; the fix]``."""
    loc = tuple(err["loc"])
    where = _field_path(loc)
    nested = (err.get("ctx") or {}).get("problems") if err["type"] == "problems" else None
    if nested:
        return [f"{_join(where, sub)}: {what}" for sub, what in nested]
    if err["type"] == "extra_forbidden":
        owner = _model_at(root, loc[:-1])
        hint = did_you_mean(str(loc[-1]), owner.model_fields) if owner else ""
        return [f"{_join(where, '')}: unknown key{hint}"]
    if err["type"] == "missing":
        return [f"{_join(where, '')}: required field is missing"]
    return [f"{_join(where, '')}: {message(err)}"]


def _consequence(err: Any, errors: list[Any]) -> bool:
    """A list "too short" only because its items were invalid (those items are reported)."""
    loc = tuple(err["loc"])
    return err["type"] == "too_short" and any(len(e["loc"]) > len(loc) and tuple(e["loc"][: len(loc)]) == loc
                                              for e in errors)  # fmt: skip


def problem_lines(errors: list[Any], root: type[BaseModel]) -> list[str]:
    """One line per problem in pydantic ``errors`` of validating ``root``."""
    return [line for err in errors if not _consequence(err, errors) for line in _describe(err, root)]
