"""The Python API in one call each: :func:`evaluate` an in-memory model, :func:`run` a suite.

Both keep the suite's contracts: the threat model is validated like a suite's ``[[evaluations]]``,
only clean-correct images are attacked, every adversarial batch is checked to be finite, in
[0, 1] and inside the eps ball, the per-example worst case is reported per (norm, eps), and the
result is a DataFrame in the results schema (``robustbench_cnn.contract.schema.COLUMNS``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from robustbench_cnn import zoo
from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.crafting import DEFAULT_CRAFTING
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.attacks.preflight import attacker_for, is_randomized
from robustbench_cnn.config.load import LoadedSuite, load_suite, parse_suite
from robustbench_cnn.config.spec import DatasetSpec, EvalSpec, PreprocessField
from robustbench_cnn.contract.results import Row, frame
from robustbench_cnn.data import ImageDataset, load_dataset
from robustbench_cnn.engine.cells import AttackParams, Cell, CleanParams
from robustbench_cnn.engine.prepare import preprocess_stats
from robustbench_cnn.engine.runner import RunOptions, RunResult, new_run_id, resolve_device, run_suite
from robustbench_cnn.errors import InputError
from robustbench_cnn.measures.common import seeded_logits
from robustbench_cnn.metrics import accuracy, expected_calibration_error, macro_f1
from robustbench_cnn.models import Normalized, build_model, check_output
from robustbench_cnn.models.checkpoint import load_checkpoint
from robustbench_cnn.models.sources import preload
from robustbench_cnn.report.summary import finish_run
from robustbench_cnn.runtime.torch_runtime import count_params
from robustbench_cnn.seeds import derived_seed
from robustbench_cnn.zoo import Preprocess, entry
from robustbench_cnn.zoo import zoo_dir as find_zoo

PROBE = 64  # eval images the randomness probe runs on (the run's preflight probes as many)
CRAFT_PROBE = 8  # eval images the crafting model is verified on (as measures.common.crafting_for)


def _one_line(where: str, exc: ValidationError) -> InputError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return InputError(f"evaluate(): {where}{'.' + loc if loc else ''}: {msg}")


def _dataset(
    data: str | ImageDataset, eval_size: int | None, image_size: int | None, data_dir: str | os.PathLike[str] | None
) -> ImageDataset:
    if not isinstance(data, str):
        return data

    try:
        spec = DatasetSpec(name=data, eval_size=eval_size, image_size=image_size)
    except ValidationError as exc:
        raise _one_line("data", exc) from None
    return load_dataset(spec, Path(data_dir).resolve() if data_dir is not None else None)


def _preprocessed(model: nn.Module, ds: ImageDataset, preprocess: Any, normalize: bool) -> nn.Module:
    """``model`` behind its declared preprocessing (``"none"``, ``"dataset"``, a mapping or a
    :class:`~robustbench_cnn.zoo.Preprocess`); ``normalize=True`` is ``preprocess="dataset"``."""
    if preprocess is None and not normalize:
        return model
    try:
        declared: Preprocess | str | None = TypeAdapter(PreprocessField).validate_python(
            "dataset" if preprocess is None else preprocess
        )
    except ValidationError as exc:
        raise _one_line("preprocess", exc) from None
    return Normalized(model, *preprocess_stats(declared, ds, "evaluate(): preprocess"))


def _zoo_model(name: str, ds: ImageDataset, zoo_dir: str | os.PathLike[str] | None) -> nn.Module:
    """Zoo entry ``name`` built from its architecture and preprocessing, filled from its verified file."""

    e = zoo.entry(name)
    if e.kind != "torch":
        raise InputError(f"evaluate(): zoo model '{e.name}' is an edge build ({e.file}), not torch weights")
    zoo.require_shape(e.name, (ds.in_channels, ds.image_size, ds.image_size), "evaluate()")
    path = zoo.locate(e.name, zoo.zoo_dir(Path(zoo_dir) if zoo_dir is not None else None), "evaluate()")
    mean, std = preprocess_stats(e.preprocess, ds, f"zoo:{e.name}")
    model = build_model(e.arch, ds.num_classes, ds.in_channels, mean, std, dict(e.params), image_size=ds.image_size)
    load_checkpoint(model, path, "net")
    return model


def _threat_models(
    attacks: Sequence[str], eps: Sequence[float | str], norm: str, steps: int, restarts: int,
    step_size: float | None = None,
) -> list[EvalSpec]:  # fmt: skip

    if isinstance(attacks, str):
        attacks = (attacks,)
    out = []
    for i, attack in enumerate(attacks):
        try:
            out.append(EvalSpec(attack=attack, norm=norm, eps=tuple(eps), steps=steps, restarts=restarts,
                                step_size=step_size))  # fmt: skip
        except ValidationError as exc:
            raise _one_line(f"attacks[{i}]", exc) from None
    return out


def _check_model(model: nn.Module, data: ImageDataset) -> None:
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise InputError(f"evaluate(): the model's {name} holds NaN or infinite values")
    check_output(model, data.num_classes, data.in_channels, data.image_size)


def _robust_rows(
    model: nn.Module,
    ds: ImageDataset,
    specs: list[EvalSpec],
    clean: torch.Tensor,
    row: Callable[..., Row],
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool,
    attacker: nn.Module,
) -> list[Row]:
    """``robust_acc`` per attack and eps (only clean-correct images attacked), then ``worst_case`` per eps."""
    x, y, n = ds.x_eval, ds.y_eval, len(ds.y_eval)
    rows: list[Row] = []
    survived: dict[float, list[torch.Tensor]] = {}
    for spec in specs:
        for e in spec.eps:
            make = partial(ATTACKS.get(spec.attack), eps=e, norm=spec.norm, steps=spec.steps, step_size=spec.step_size,
                           num_classes=ds.num_classes)  # fmt: skip
            correct = robust_correct(model, make, x, y, clean, e, spec.norm, batch_size=batch_size,
                                     restarts=spec.restarts, seed=derived_seed(seed, _label(spec, e)), device=device,
                                     desc=f"{spec.attack}@{e:g}", progress=progress, attacker=attacker)  # fmt: skip
            survived.setdefault(e, []).append(correct)
            rows.append(row(metric="robust_acc", value=float(correct.float().mean()), attack=spec.attack,
                            norm=spec.norm, eps=e, n=n))  # fmt: skip
    if len(specs) > 1:
        for e, masks in survived.items():
            worst = float(torch.stack(masks).all(0).float().mean())
            rows.append(row(metric="robust_acc", value=worst, attack="worst_case", norm=specs[0].norm, eps=e, n=n))
    return rows


def _label(ev: EvalSpec | None = None, eps: float = 0.0) -> str:
    """The label a suite run gives the cell of this measurement (clean: ``ev`` None); its seed derives
    from it, so ``evaluate`` draws the random starts, and a randomized model's noise, that ``run`` draws."""
    if ev is None:
        return Cell("", "clean", CleanParams()).label
    return Cell("", "attack", AttackParams(ev.attack, ev.norm, float(eps), ev.steps, ev.step_size, ev.restarts)).label


def _clean_rows(model: nn.Module, ds: ImageDataset, row: Callable[..., Row], batch_size: int, device: torch.device,
                seed: int) -> tuple[list[Row], torch.Tensor]:  # fmt: skip
    """``clean_acc``, ``macro_f1``, ``ece`` and ``params`` rows, and the clean-correct mask ``(N,)``."""
    x, y, n = ds.x_eval, ds.y_eval, len(ds.y_eval)
    logits = seeded_logits(model, x, batch_size, device, derived_seed(seed, _label()))
    pred = logits.argmax(1)
    rows = [row(metric="clean_acc", value=accuracy(pred, y), n=n),
            row(metric="macro_f1", value=macro_f1(pred, y, ds.num_classes), n=n),
            row(metric="ece", value=expected_calibration_error(logits.softmax(1), y), n=n),
            row(metric="params", value=count_params(model))]  # fmt: skip
    return rows, pred == y


def _attacker(model: nn.Module, ds: ImageDataset, device: torch.device, samples: int) -> tuple[bool, nn.Module]:
    """``(randomized, attacker)``: whether two identical passes on the first ``PROBE`` eval images differ
    (the run's preflight row), and the module attacks craft on, built as a run builds it (EOT over
    ``samples`` passes for a randomized model; verified on the first ``CRAFT_PROBE`` images)."""
    if samples < 1:
        raise InputError(f"evaluate(): eot_samples = {samples}; give 1 or more forward passes")
    randomized = is_randomized(model, ds.x_eval[:PROBE].to(device))
    x, y = ds.x_eval[:CRAFT_PROBE].to(device), ds.y_eval[:CRAFT_PROBE].to(device)
    return randomized, attacker_for(model, DEFAULT_CRAFTING, x, y, device, samples, "evaluate()")


def evaluate(
    model: nn.Module | str,
    data: str | ImageDataset | None = None,
    attacks: Sequence[str] = ("pgd",),
    eps: Sequence[float | str] = (0.0, "8/255"),
    norm: str = "linf",
    *,
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    eval_size: int | None = None,
    image_size: int | None = None,
    normalize: bool = False,
    preprocess: str | Mapping[str, Any] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    zoo_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "auto",
    name: str | None = None,
    progress: bool = False,
    eot_samples: int = 8,
) -> pd.DataFrame:
    """Clean and robust accuracy of ``model`` in the results schema.

    ``model``: maps images ``(N, C, H, W)`` in [0, 1] to logits ``(N, K)``; it is moved to ``device``
    and left in eval mode. ``preprocess`` puts what the network expects in front of it, as a suite's
    ``models[].preprocess``: ``"none"``, ``"dataset"`` (the training images' mean/std; also
    ``normalize=True``) or ``{"mean": [...], "std": [...], "input_range": "0..1" | "0..255"}``.
    ``model = "zoo:NAME"`` loads a zoo entry (its verified file in ``zoo_dir`` or
    ``$ROBUSTBENCH_CNN_ZOO``) with its own architecture and preprocessing. ``data``: a dataset name
    (loaded from ``data_dir`` with ``eval_size``/``image_size`` as in a suite's ``[dataset]``;
    default ``digits``, or the zoo entry's dataset) or an ``ImageDataset``. Every
    attack is run at every ``eps`` (numbers or fractions like ``"8/255"``) under ``norm`` (``steps`` of
    ``step_size``, default 2.5 * eps / steps); with
    more than one attack a ``worst_case`` row per eps counts an image robust only if all failed.
    A model whose two identical forward passes differ (``randomized`` row = 1) is attacked through
    the mean of ``eot_samples`` passes (EOT, Athalye et al. 2018), as a suite run attacks it
    (``checks.eot_samples``); the clean pass and each attack draw their randomness from ``seed`` as the
    run's clean and attack cells do, so on the same model, data and attack settings ``evaluate`` gives
    the clean and robust accuracies a suite run with that ``seed`` gives (tested on a randomized model).
    Rows: ``clean_acc``, ``macro_f1``, ``ece``, ``params``, ``randomized``, then ``robust_acc`` per
    attack and eps.
    """

    specs = _threat_models(attacks, eps, norm, steps, restarts, step_size)
    if isinstance(model, str):
        zoo_name = entry(model).name
        ds = _dataset(data or entry(model).dataset, eval_size, image_size, data_dir)
        model, name = _zoo_model(zoo_name, ds, zoo_dir), name or zoo_name
    else:
        ds = _dataset(data or "digits", eval_size, image_size, data_dir)
        model = _preprocessed(model, ds, preprocess, normalize)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    _check_model(model, ds)
    arch = type(model.net if isinstance(model, Normalized) else model).__name__
    row = partial(Row, run_id=new_run_id(), suite="api", dataset=ds.name, model=name or arch, arch=arch,
                  device=dev.type)  # fmt: skip
    rows, clean = _clean_rows(model, ds, row, batch_size, dev, seed)
    randomized, attacker = _attacker(model, ds, dev, eot_samples)
    rows.append(row(metric="randomized", value=float(randomized), n=min(PROBE, len(ds.y_eval))))
    rows += _robust_rows(model, ds, specs, clean, row, batch_size=batch_size, seed=seed, device=dev,
                         progress=progress, attacker=attacker)  # fmt: skip
    return frame(rows)


def run(
    suite: str | os.PathLike[str] | Mapping[str, Any],
    out: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    zoo_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> RunResult:
    """Run a suite file, or a suite given as a dict (validated exactly like a file), as the CLI's
    ``run`` does; returns the run's directory, results table and manifest.

    ``out``: results root (default ``$ROBUSTBENCH_CNN_RESULTS`` or ``results``, as the CLI);
    ``cache_dir``: model cache (default ``out/cache``); ``base_dir``: where a dict suite's relative
    paths and plugin modules are found (default ``out``); ``data_dir``: overrides ``dataset.data_dir``
    (as ``--data-dir``); ``zoo_dir``: where ``zoo:NAME`` checkpoints are (as ``--zoo-dir``).
    """

    root = Path(out if out is not None else os.environ.get("ROBUSTBENCH_CNN_RESULTS", "results")).resolve()
    zoo = find_zoo(Path(zoo_dir) if zoo_dir is not None else None)
    if isinstance(suite, Mapping):
        data = dict(suite)
        folder = Path(base_dir).resolve() if base_dir is not None else root
        preload(data, folder, "suite dict")
        spec = parse_suite(data, "suite dict")
        sha = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
        loaded = LoadedSuite(spec, folder / f"{spec.name}.toml", sha, zoo)
    else:
        loaded = load_suite(Path(suite), zoo)
    opts = RunOptions(out_root=root, cache_dir=Path(cache_dir).resolve() if cache_dir else root / "cache",
                      device=device, seed=seed, progress=progress, finish=finish_run,
                      data_dir=Path(data_dir).resolve() if data_dir is not None else None)  # fmt: skip
    return run_suite(loaded, opts)
