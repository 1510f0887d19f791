"""The ``clean`` measurement: clean accuracy, macro F1, ECE, parameters, MACs and size of one prepared
model; ``check_trained`` (undertrained models) and, for a zoo model, ``check_published_clean``. Its
per-image mask of clean-correct images is the input of every attack.

Every executor has the signature of :data:`robustbench_cnn.engine.kinds.Run` and returns a
:class:`CellResult`; nothing writes to the run manifest: facts for it go in the result's ``meta``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from robustbench_cnn.attacks.crafting import Autocast
from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.contract.results import Row
from robustbench_cnn.engine.cells import Cell, CellResult, CleanParams, Inputs, Shard
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.kinds import cell_kind, register_measure
from robustbench_cnn.engine.plan import crafting
from robustbench_cnn.measures.common import predict_logits, seeded_logits, weights_size_bytes
from robustbench_cnn.metrics import accuracy, clopper_pearson, expected_calibration_error, macro_f1
from robustbench_cnn.runtime.torch_runtime import count_macs, count_params
from robustbench_cnn.seeds import derived_seed
from robustbench_cnn.zoo import ZOO

log = logging.getLogger(__name__)


@register_measure("clean", order=0)
def plan_clean(spec: SuiteSpec, mspec: ModelSpec, planned: Sequence[Cell]) -> list[Cell]:
    """Every model's first cell."""
    return [Cell(mspec.name, "clean", CleanParams(crafting(spec).precision))]


@cell_kind("clean", CleanParams)
def clean_cell(ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None) -> CellResult:
    """Clean accuracy, macro F1, ECE, params, MACs, size; mask: clean-correct images."""
    row, data, model = ctx.row(target.spec), ctx.data, target.model
    x, y, n = data.x_eval, data.y_eval, len(data.y_eval)
    logits = seeded_logits(model, x, ctx.spec.eval_batch_size, ctx.device, derived_seed(ctx.seed, cell.label))
    pred = logits.argmax(1)
    clean_acc = accuracy(pred, y)
    log.info("%s: clean accuracy %.4f on %d images", target.name, clean_acc, n)
    rows = [
        row(metric="clean_acc", value=clean_acc, n=n),
        row(metric="macro_f1", value=macro_f1(pred, y, data.num_classes), n=n),
        row(metric="ece", value=expected_calibration_error(logits.softmax(1), y), n=n),
        row(metric="params", value=count_params(model)),
        row(metric="macs", value=count_macs(model, tuple(x.shape[1:]))),
        row(metric="size_bytes", value=weights_size_bytes(model)),
    ]
    trained, meta = _trained_row(ctx, target, row, clean_acc, n)
    rows.append(trained)
    published = published_clean_check(target.spec.zoo, clean_acc, n)
    if published is not None:
        passed, detail = published
        rows.append(row(metric="check_published_clean", value=1.0 if passed else 0.0, n=n))
        meta["checks"] = {"published_clean": {"passed": passed, "detail": detail}}
        if not passed:
            log.warning("%s: %s", target.name, detail)
    if cell.params.attack_precision == "bf16":  # the crafting precision's parity
        pred_bf16 = predict_logits(Autocast(model), x, ctx.spec.eval_batch_size, ctx.device).argmax(1)
        rows.append(row(metric="clean_acc_bf16", value=accuracy(pred_bf16, y), n=n))
        rows.append(row(metric="bf16_agreement", value=float((pred_bf16 == pred).float().mean()), n=n))
    return CellResult(rows, {"mask": pred == y}, meta)


def published_clean_check(zoo: str | None, clean_acc: float, n: int) -> tuple[bool, str] | None:
    """A zoo model's clean accuracy against its published figure: (passed, detail), passed when the
    95% Clopper-Pearson interval of the measured accuracy contains the published one; None when the
    model has no published clean figure. A contradiction is the symptom of wrong preprocessing or
    the wrong file, and makes every robust number of the model unreliable."""
    entry = ZOO.get(zoo) if zoo is not None else None
    published = next((f.value for f in entry.figures if f.kind == "clean"), None) if entry is not None else None
    if published is None:
        return None
    low, high = clopper_pearson(clean_acc, n)
    if low <= published <= high:
        return True, f"clean {clean_acc:.4f} [{low:.4f}, {high:.4f}] contains the published {published:.4f}"
    return False, (f"clean accuracy {clean_acc:.4f} [{low:.4f}, {high:.4f}] contradicts the published {published:.4f} "
                   f"of zoo:{zoo}: wrong preprocessing or the wrong checkpoint")  # fmt: skip


def _trained_row(ctx: RunContext, target: ModelUnderTest, row, clean_acc: float, n: int) -> tuple[Row, dict]:
    """``check_trained``: 0 when the clean accuracy, or the final training accuracy, is under the
    suite's floor (default twice chance): an undertrained model's robustness numbers mean little."""
    floor = ctx.spec.checks.min_clean_acc
    floor = 2 / ctx.data.num_classes if floor is None else floor
    train_acc = target.info.get("final_train_acc")
    low = [f"clean {clean_acc:.3f}"] if clean_acc < floor else []
    if isinstance(train_acc, float) and train_acc < floor:
        low.append(f"training {train_acc:.3f}")
    meta = {}
    if low:
        log.warning("%s: undertrained (%s < %.3f): its robustness rows say little", target.name, ", ".join(low), floor)
        meta["undertrained"] = f"{', '.join(low)} accuracy < {floor:.3f}"
    return row(metric="check_trained", value=0.0 if low else 1.0, n=n), meta
