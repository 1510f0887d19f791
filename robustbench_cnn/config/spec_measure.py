"""What a suite measures and how: evaluations (attacks), the strong ensemble, latency,
certification, sanity checks, exports, and the performance settings of the hot paths."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from robustbench_cnn.config.problems import problems
from robustbench_cnn.config.spec_types import (
    MAX_BATCH,
    MAX_IMAGES,
    MAX_ITEMS,
    MAX_MODELS,
    MAX_STEPS,
    AttackName,
    Number,
)
from robustbench_cnn.config.spec_types import (
    SpecBase as _Spec,
)
from robustbench_cnn.registry import registry


class EvalSpec(_Spec):
    """One attack swept over a list of eps; threat model ``norm`` on [0, 1] images."""

    attack: AttackName
    norm: Literal["linf", "l2"] = "linf"
    eps: tuple[Number, ...] = Field(min_length=1, max_length=MAX_ITEMS)
    steps: int = Field(10, ge=1, le=MAX_STEPS)
    step_size: Number | None = Field(None, gt=0, le=10, description="default 2.5 * eps / steps (Madry et al.)")
    restarts: int = Field(1, ge=1, le=100)
    models: tuple[str, ...] | None = Field(
        None, max_length=MAX_MODELS, description="the models it runs on (e.g. a zoo model's published protocol); "
        "default: every model",
    )  # fmt: skip

    def applies_to(self, model: str) -> bool:
        return self.models is None or model in self.models

    @model_validator(mode="after")
    def _eps_in_range(self) -> EvalSpec:
        norms = registry("attacks").get(self.attack).norms
        found = []
        if self.norm not in norms:
            found.append(("norm", f"attack '{self.attack}' supports norm {' or '.join(norms)}, not '{self.norm}'"))
        for i, eps in enumerate(self.eps):
            if not math.isfinite(eps) or eps < 0:
                found.append(("", f"eps[{i}] = {eps} must be a finite number >= 0"))
            elif self.norm == "linf" and eps > 1:
                fix = f"did you mean '{eps:g}/255'?"
                found.append(("", f"eps[{i}] = {eps} is out of range for linf on [0, 1] images (0..1); {fix}"))
            elif eps > 1e4:
                found.append(("", f"eps[{i}] = {eps} is out of range for l2 (an image has at most ~1e3 norm)"))
        problems(found)
        return self


class LatencySpec(_Spec):
    """Latency of the model's forward pass on the run's device (torch eager)."""

    enabled: bool = True
    batch_sizes: tuple[Annotated[int, Field(ge=1, le=MAX_BATCH)], ...] = Field((1, 64), max_length=16)
    warmup: int = Field(5, ge=0, le=10_000)
    min_repeats: int = Field(20, ge=3, le=100_000)
    budget_s: float = Field(1.0, gt=0, le=3600, description="time budget per batch size, after warm-up")


class CertifySpec(_Spec):
    """Randomized-smoothing certification (Cohen et al. 2019) of every model with a ``sigma`` defense."""

    n0: int = Field(100, ge=1, le=10_000_000, description="noise samples to select the top class")
    n: int = Field(1000, ge=1, le=10_000_000, description="noise samples to estimate its probability")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="failure probability of each certificate")
    radii: tuple[Annotated[Number, Field(ge=0, le=1e4)], ...] = Field(
        (0.0, 0.25, 0.5, 0.75, 1.0), min_length=1, max_length=MAX_ITEMS
    )
    eval_size: int = Field(100, ge=1, le=MAX_IMAGES, description="first images of the eval split to certify")
    batch_size: int | None = Field(
        None, ge=1, le=MAX_BATCH, description="noisy copies per forward pass (a multiple of 16 draws the same noise "
        "as any other); default: 1024 on CPU, 16384 on CUDA",
    )  # fmt: skip
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="runs the noisy batches; auto: onnxruntime on CPU (same counts, ~2x faster), torch on GPU"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: the noisy batches run under autocast (torch runtime) once a probe image's class "
        "counts match fp32's within count_tolerance; else fp32 with a warning",
    )  # fmt: skip
    compile: bool = Field(False, description="torch.compile the torch sampler's classifier (checked like bf16)")
    count_tolerance: float = Field(0.01, ge=0, le=1, description="max |count difference| / n on the probe image")


class ChecksSpec(_Spec):
    """Gradient-masking sanity checks (Carlini et al. 2019), run on every model."""

    enabled: bool = True
    eps: Number | None = Field(None, gt=0, le=1, description="Linf budget; default: largest linf eps evaluated")
    steps: int = Field(10, ge=1, le=MAX_STEPS)
    more_steps_factor: int = Field(5, ge=2, le=100, description="the more_steps check runs factor x steps ...")
    more_restarts: int = Field(3, ge=1, le=100, description="... with this many restarts")
    large_eps: Number = Field(0.5, gt=0, le=1)
    large_eps_max_acc: float = Field(0.05, ge=0, le=1)
    tolerance: float = Field(0.05, ge=0, le=1)
    eval_size: int = Field(200, ge=1, le=MAX_IMAGES)
    surrogate: str | None = Field(None, description="model name for the transfer check; default: first undefended")
    min_clean_acc: float | None = Field(
        None, ge=0, le=1, description="a model below this clean (or training) accuracy is flagged undertrained "
        "(check_trained = 0); default: twice chance, 2 / classes",
    )  # fmt: skip
    every_budget: bool = Field(True, description="more_steps for every iterative attack at every evaluated budget")
    eot_samples: int = Field(
        8, ge=1, le=1024, description="a randomized model is attacked through its mean of this many passes"
    )


class ThreatModelSpec(_Spec):
    """A headline threat model (RobustBench: one leaderboard per threat model): the leaderboard,
    plots, Pareto fronts and the dashboard read robust accuracy at this (norm, eps); every other budget
    stays in the detail table and the curves. It must be one of the budgets the evaluations run."""

    norm: Literal["linf", "l2"] = "linf"
    eps: Number = Field(gt=0, le=1e4)


class EnsembleSpec(_Spec):
    """The strong, named ensemble behind the headline worst case, run at every evaluated (norm, eps)."""

    enabled: bool = True
    members: tuple[Literal["apgd_ce", "apgd_dlr", "apgd_t", "cw_pgd"], ...] = Field(
        ("apgd_ce", "apgd_t", "cw_pgd"), min_length=1, max_length=8, description="run in order, each on the survivors"
    )
    steps: int = Field(50, ge=1, le=MAX_STEPS)
    restarts: int = Field(2, ge=1, le=1000)
    targets: int = Field(3, ge=1, le=1000, description="apgd_t: the most likely wrong classes it targets")
    eval_size: int | None = Field(
        None, ge=1, le=MAX_IMAGES, description="a fixed seeded subset of the eval split the ensemble (and so the "
        "worst case) runs on; default: all of it",
    )  # fmt: skip


class PerformanceSpec(_Spec):
    """How the hot paths run. Attacks only *craft* on the fast path; the model itself, in fp32,
    decides every robust-accuracy verdict (see ``robustbench_cnn.attacks.crafting``)."""

    threads: int | None = Field(None, ge=1, le=4096, description="torch intra-op threads; default: torch's (all cores)")
    reproducible_training: bool = Field(
        True, description="on an x86-64 CPU: train in a child process pinned to AVX2 kernels and 2 threads, so "
        "every x86 runner trains the same weights (robustbench_cnn.train.pinned)",
    )  # fmt: skip
    fold_batchnorm: bool = Field(True, description="attacks differentiate a verified BatchNorm-folded copy")
    attack_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 on a GPU with native bfloat16, else fp32; bf16: attacks craft under autocast, "
        "and clean_acc_bf16 / bf16_agreement rows report parity",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the module attacks differentiate (once per model); auto: on CUDA when a model's "
        "attack work reaches compile_min_work image-steps",
    )
    compile_min_work: float = Field(
        2e7,
        ge=0,
        description="image-steps per model from which compile = auto compiles and cudnn_benchmark = auto autotunes",
    )
    attack_batch_size: int | None = Field(
        None, ge=1, description="images per attack batch; default: eval_batch_size on CPU, on CUDA the largest power "
        "of two up to 4096 whose forward + input gradient fits in a quarter of the GPU's memory",
    )  # fmt: skip
    cudnn_benchmark: bool | Literal["auto"] = Field(
        "auto",
        description="on CUDA, let cuDNN time its convolution algorithms for each new input shape (attacks: only "
        "their full-batch shape); auto: when a model's attack work reaches compile_min_work image-steps (each new "
        "shape costs seconds: MobileNetV2 on an H100, 2.6 s per eval batch shape)",
    )
    attack_shard_size: int = Field(
        500, ge=1, le=MAX_IMAGES, description="images per attack shard: the unit a worker runs and a resumed run "
        "skips; batches never cross a shard, so it is part of an attack cell's identity (never the worker count)",
    )  # fmt: skip
    certify_shard_size: int = Field(
        50, ge=1, le=MAX_IMAGES, description="images per certification shard (each image has its own noise "
        "generator, so certificates do not depend on it)",
    )  # fmt: skip


class ExportSpec(_Spec):
    """Export models to a deployable format and measure them on its runtime, with parity checks.

    ``onnx`` runs on ONNX Runtime (dynamic batch; ``fp16`` on its CUDA/TensorRT provider); ``tflite``
    on the LiteRT interpreter (batch 1); ``executorch`` is a ``.pte`` program on ExecuTorch's XNNPACK
    delegate (batch 1; the ``executorch`` extra); ``aoti`` is an AOTInductor fp16/bf16 build run by torch
    on CUDA.
    """

    format: Literal["onnx", "tflite", "executorch", "aoti"] = "onnx"
    precision: Literal["fp32", "int8", "fp16", "bf16"] = "fp32"
    models: tuple[str, ...] | None = Field(None, max_length=MAX_MODELS, description="model names; default: every model")
    min_agreement: float | None = Field(
        None, ge=0, le=1, description="parity: top-1 agreement with torch; default 0.995 fp32, 0.99 fp16/bf16, 0.97 "
        "int8",
    )  # fmt: skip
    max_accuracy_loss: float | None = Field(
        None, ge=0, le=1, description="parity: clean accuracy lost against torch; default 0.02 (int8), 0.01 otherwise"
    )
    tensorrt: bool = Field(False, description="onnx fp16: ask for ONNX Runtime's TensorRT provider first")
    direct_queries: int = Field(
        100, ge=0, le=100_000, description="Square Attack queries per image on the export's own runtime (0: off)"
    )
    direct_size: int | None = Field(None, ge=1, le=MAX_IMAGES, description="images it attacks; default: all")
    calibration_size: int = Field(256, ge=1, le=MAX_IMAGES, description="training images that calibrate int8")
    per_channel: bool = Field(
        False,
        description="int8 per-channel weight scales; default: yes for tflite and executorch, no for onnx "
        "(docs/suite.md)",
    )
    opset: int = Field(18, ge=17, le=99, description="ONNX opset")

    @model_validator(mode="before")
    @classmethod
    def _per_channel_default(cls, data: Any) -> Any:
        """TFLite's int8 spec quantizes conv weights per channel (per-tensor: 8% top-1 agreement on the
        smoke MobileNetV2, whose depthwise filters differ in range); ONNX Runtime's per-tensor QDQ
        agreed better on simple_cnn (100% vs 92.8%). ExecuTorch's XNNPACK quantizer follows TFLite's
        scheme (per-channel conv weights), so it takes TFLite's default."""
        if isinstance(data, dict) and "per_channel" not in data:
            return {**data, "per_channel": data.get("format") in ("tflite", "executorch")}
        return data

    @model_validator(mode="after")
    def _precision_fits_format(self) -> ExportSpec:
        allowed = {"onnx": ("fp32", "int8", "fp16"), "tflite": ("fp32", "int8"), "executorch": ("fp32", "int8"),
                   "aoti": ("fp16", "bf16")}  # fmt: skip
        if self.precision not in allowed[self.format]:
            raise ValueError(f"format '{self.format}' takes precision {' | '.join(allowed[self.format])}, "
                             f"not '{self.precision}'")  # fmt: skip
        return self
