"""Typed, frozen specs for a suite file. Every field has a default except what names the work.

A suite file is TOML::

    name = "smoke"
    seed = 0
    [dataset]
    name = "digits"
    [[models]]
    name = "cnn"
    arch = "simple_cnn"
    [[evaluations]]
    attack = "pgd"
    eps = ["1/255", 0.05]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from robustbench_cnn.config.model_spec import (  # noqa: F401  (re-exported: the suite's spec in one place)
    NEEDS_PREPROCESS,
    CompressSpec,
    DatasetSpec,
    DefenseSpec,
    ModelSpec,
    PreprocessField,
    TrainSpec,
    from_zoo,
    zoo_entry,
)
from robustbench_cnn.config.paths import name_key
from robustbench_cnn.config.problems import problems, validated
from robustbench_cnn.config.spec_measure import (  # noqa: F401  (re-exported: the suite's spec in one place)
    CertifySpec,
    ChecksSpec,
    EnsembleSpec,
    EvalSpec,
    ExportSpec,
    LatencySpec,
    PerformanceSpec,
    ThreatModelSpec,
)
from robustbench_cnn.config.spec_types import (  # noqa: F401  (Number: re-exported for defenses and compressors)
    MAX_BATCH,
    MAX_IMAGES,
    MAX_ITEMS,
    MAX_MODELS,
    MAX_SEED,
    ArchName,
    DatasetName,
    Name,
    Number,
    PathText,
)
from robustbench_cnn.config.spec_types import (
    SpecBase as _Spec,
)
from robustbench_cnn.errors import shown
from robustbench_cnn.registry import registry


class SuiteSpec(_Spec):
    """The whole suite: data, models, evaluations, and how to run them."""

    name: Name
    plugins: tuple[str, ...] = Field((), description="modules imported (from the suite's folder) before validation")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$", description="auto | cpu | cuda | cuda:N")
    eval_batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    dataset: DatasetSpec = DatasetSpec()
    models: tuple[ModelSpec, ...] = Field(min_length=1, max_length=MAX_MODELS)
    evaluations: tuple[EvalSpec, ...] = Field((), max_length=MAX_ITEMS)
    latency: LatencySpec = LatencySpec()
    certify: CertifySpec = CertifySpec()
    checks: ChecksSpec = ChecksSpec()
    ensemble: EnsembleSpec = EnsembleSpec()
    exports: tuple[ExportSpec, ...] = Field((), max_length=MAX_ITEMS)
    performance: PerformanceSpec = PerformanceSpec()
    threat_models: tuple[ThreatModelSpec, ...] = Field(
        (), max_length=8, description="the headline budget(s), one leaderboard each; default: the eps the "
        "suite's adversarial training used, else the middle evaluated Linf eps (see headline())",
    )  # fmt: skip
    sections: Mapping[str, Any] = Field(
        default_factory=dict, description="the settings of plugin measures, one top-level table each (e.g. "
        "[corruptions]), validated by the settings class each registers (see section())",
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _measure_sections(cls, data: Any) -> Any:
        """Top-level tables named after a registered measure with settings become its section, validated
        by that measure's settings class; any other unknown key stays, for the unknown-key error."""
        if isinstance(data, dict) and "sections" in data:
            problems([("sections", "unknown key; a measure's settings are a top-level table named after it, "
                       "e.g. [corruptions]")])  # fmt: skip
        if not isinstance(data, dict) or set(data) <= set(cls.model_fields):
            return data
        measures = registry("measures")
        extra = [k for k in data if k not in cls.model_fields and k in measures and measures.get(k).settings]
        if not extra:
            return data
        sections, found = {}, []
        for key in extra:
            sections[key], more = validated(measures.get(key).settings, data[key], key)
            found += more
        problems(found)
        return {**{k: v for k, v in data.items() if k not in extra}, "sections": sections}

    def section(self, name: str) -> Any:
        """A plugin measure's settings (``[name]`` in the suite), or ``None`` where the suite has none."""
        return self.sections.get(name)

    @model_validator(mode="before")
    @classmethod
    def _derive_models(cls, data: Any) -> Any:
        """A model with ``compress.source`` inherits the source's ``arch`` and ``params``, and
        ``compress.ratio = [a, b]`` expands into one model per ratio, named ``<name>-r<ratio>``."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            return data
        data = {**data, "models": [from_zoo(m) for m in data["models"]]}
        by_name = {m["name"]: m for m in data["models"] if isinstance(m, dict) and isinstance(m.get("name"), str)}
        models: list[Any] = []
        for m in data["models"]:
            c = m.get("compress") if isinstance(m, dict) else None
            if not isinstance(c, dict):
                models.append(m)
                continue
            source = by_name.get(c["source"]) if isinstance(c.get("source"), str) else None
            if source is not None:
                m = {"arch": source.get("arch"), "params": source.get("params", {}), **m}
            ratios = c.get("ratio")
            if isinstance(ratios, list) and len(ratios) <= MAX_ITEMS:
                models += [{**m, "name": f"{m.get('name')}-r{r}", "compress": {**c, "ratio": r}} for r in ratios]
            else:  # a too-long list stays a list: "ratio: Input should be a valid number"
                models.append(m)
        return {**data, "models": models}

    @model_validator(mode="after")
    def _unique_model_names(self) -> SuiteSpec:
        """Names unique even where tables and file systems merge them (see :func:`name_key`); every
        reference to a model names one defined earlier."""
        seen: dict[str, str] = {}  # name_key -> name
        found: list[tuple[str, str]] = []
        for i, m in enumerate(self.models):
            twin = seen.get(name_key(m.name))
            if twin == m.name:
                found.append((f"models[{i}].name", f"model name '{m.name}' is used twice; names must be unique"))
            elif twin is not None:
                found.append((f"models[{i}].name", f"model names '{twin}' and '{m.name}' differ only in case or "
                              "'-'/'_'/'.', which results tables and file systems merge; rename one"))  # fmt: skip
            for up in m.compress.upstream if m.compress is not None else ():
                if up not in seen.values():
                    found.append((f"models[{i}].compress", f"model '{m.name}': {shown(up, 80)} must be a model "
                                  "defined earlier in the file"))  # fmt: skip
            seen.setdefault(name_key(m.name), m.name)
        names = set(seen.values())
        for i, m in enumerate(self.models):
            e = zoo_entry(m)
            if e is not None and self.dataset.name not in (e.dataset, "npz"):
                found.append((f"models[{i}].checkpoint", f"zoo model '{e.name}' was published on {e.dataset}, "
                              f"not {self.dataset.name}; set dataset.name = '{e.dataset}'"))  # fmt: skip
        if self.checks.surrogate is not None and self.checks.surrogate not in names:
            found.append(("checks.surrogate", f"no model named {shown(self.checks.surrogate, 80)}"))
        listed = [(f"exports[{i}]", ex.models) for i, ex in enumerate(self.exports)]
        listed += [(f"evaluations[{i}]", ev.models) for i, ev in enumerate(self.evaluations)]
        for where, models in listed:
            found += [(f"{where}.models", f"no model named {shown(n, 80)}") for n in models or () if n not in names]
        for settings in self.sections.values():  # a plugin measure's own cross-checks against the suite
            found += settings.problems_in(self) if hasattr(settings, "problems_in") else []
        problems(found)
        return self

    @model_validator(mode="after")
    def _unique_cells(self) -> SuiteSpec:
        """Each (attack, norm, eps) and each export (format, precision) of a model once: they name cells."""
        found: list[tuple[str, str]] = []
        budgets: dict[tuple[str, str, float, str], int] = {}
        names = [m.name for m in self.models]
        for i, ev in enumerate(self.evaluations):
            for j, eps in enumerate(ev.eps):
                firsts = {budgets.setdefault((ev.attack, ev.norm, float(eps), m), i) for m in names if ev.applies_to(m)}
                first = min(firsts, default=i)
                if first != i or list(ev.eps).index(eps) != j:
                    found.append((f"evaluations[{i}].eps[{j}]", f"{ev.attack} {ev.norm} eps {eps:g} is already "
                                  f"evaluated (evaluations[{first}]); list each budget once"))  # fmt: skip
        targets: dict[tuple[str, str, str], int] = {}
        for i, ex in enumerate(self.exports):
            for m in ex.models or [m.name for m in self.models]:
                first = targets.setdefault((m, ex.format, ex.precision), i)
                if first != i:
                    found.append((f"exports[{i}]", f"model '{m}' is already exported as {ex.format} {ex.precision} "
                                  f"(exports[{first}]); list each export once"))  # fmt: skip
        problems(found)
        return self

    @model_validator(mode="after")
    def _declared_budgets_are_evaluated(self) -> SuiteSpec:
        """A declared threat model is read from rows the evaluations write: its budget must be one."""
        budgets = self.budgets()
        found = [(f"threat_models[{i}]", f"{t.norm} eps {t.eps:g} is not evaluated; add it to an [[evaluations]] "
                  f"eps list or declare one of {', '.join(f'{n} {e:g}' for n, e in budgets) or 'none'}")
                 for i, t in enumerate(self.threat_models) if (t.norm, float(t.eps)) not in budgets]  # fmt: skip
        problems(found)
        return self

    def budgets(self) -> list[tuple[str, float]]:
        """Every evaluated (norm, eps > 0), in order of first appearance."""
        seen = {(ev.norm, float(e)): None for ev in self.evaluations for e in ev.eps if e > 0}
        return list(seen)

    def headline(self) -> list[tuple[str, float, str]]:
        """The headline threat models as ``(norm, eps, rule)``, ``rule`` saying what chose each: the
        suite's declaration; else the budget its adversarial training used (where evaluated); else the
        middle evaluated Linf eps (the middle of any norm's without Linf)."""
        if self.threat_models:
            return [(t.norm, float(t.eps), "declared in the suite") for t in self.threat_models]
        budgets = self.budgets()
        for m in self.models:
            eps, norm = getattr(m.defense, "eps", None), getattr(m.defense, "norm", "linf")
            if isinstance(eps, float) and (norm, eps) in budgets:
                return [(norm, eps, f"the eps {m.name}'s adversarial training used")]
        pool = [b for b in budgets if b[0] == "linf"] or budgets
        if not pool:
            return []
        ordered = sorted(pool, key=lambda b: b[1])
        norm, eps = ordered[(len(ordered) - 1) // 2]
        return [(norm, eps, f"the middle evaluated {norm} eps (none declared, no adversarial training)")]

    @property
    def check_eps(self) -> float:
        """The sanity checks' Linf budget: ``checks.eps``, else the first Linf headline, else the
        largest Linf eps evaluated."""
        linf = [e for ev in self.evaluations if ev.norm == "linf" for e in ev.eps if e > 0]
        head = [eps for norm, eps, _ in self.headline() if norm == "linf"]
        return self.checks.eps or (head[0] if head else max(linf) if linf else 8 / 255)
