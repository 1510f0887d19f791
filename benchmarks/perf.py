"""Performance benchmarks: our hot paths against the plain code a user would write, side by side.

    nox -s perf                      # everything, including a cold-cache smoke-suite run
    python benchmarks/perf.py --quick  # skip the crafting options (compile, bf16) and the smoke-suite run

Each benchmark runs both variants in this one process, on the same model, batch and hardware,
after a warm-up, alternately ``--repeats`` times each (A-B, B-A, ...); a ratio is the median of the
adjacent pairs' ratios, the throughputs come from the median timings. Results go to
``results/perf/<run_id>/perf.csv`` (benchmark, ours, baseline, unit, ratio; ratio > 1 = we are
faster), ``perf.md`` and ``environment.json``; ``results/perf/latest`` points at the newest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
import torchattacks

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.crafting import Crafting, crafting_model
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.config.spec import DatasetSpec, LatencySpec, TrainSpec
from robustbench_cnn.contract.manifest import environment
from robustbench_cnn.data import load_dataset
from robustbench_cnn.defenses import DEFENSES
from robustbench_cnn.defenses.smoothing import Smoothed
from robustbench_cnn.engine.runner import new_run_id
from robustbench_cnn.models import build_model
from robustbench_cnn.runtime.timing import measure
from robustbench_cnn.runtime.torch_runtime import count_macs
from robustbench_cnn.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
SMOKE_MODELS = {  # as in suites/smoke.toml
    "simple_cnn": ("simple_cnn", {"width": 16}),
    "resnet20": ("resnet", {"depth": 20}),
    "mobilenet_v2": ("mobilenet_v2", {"width_mult": 1.0, "small_input": False}),
}


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired_times(
    ours: Callable[[], object], baseline: Callable[[], object], repeats: int
) -> tuple[float, float, float]:
    """``(median s of ours, median s of baseline, median over pairs of baseline/ours)``: the two are
    timed alternately (A-B, B-A, ...) after one warm-up each, and each adjacent pair gives a ratio,
    so that the drift of a shared machine (+-15% here over tens of seconds) cancels in the ratio."""
    ours(), baseline()
    t_ours, t_base = [], []
    for i in range(repeats):
        for fn, out in ((ours, t_ours), (baseline, t_base)) if i % 2 == 0 else ((baseline, t_base), (ours, t_ours)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    ratio = statistics.median(b / a for a, b in zip(t_ours, t_base, strict=True))
    return statistics.median(t_ours), statistics.median(t_base), ratio


def matmul_roof(n: int = 2048, repeats: int = 10) -> float:
    """Dense fp32 matmul GFLOP/s on this machine: the roof the attack's arithmetic is compared to."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_time(lambda: a @ b, repeats) / 1e9


def model(data, name: str, ours: bool = False) -> torch.nn.Module:
    """The smoke suite's model; ``ours=True`` lays it out as the runner does (channels_last)."""
    torch.manual_seed(0)
    arch, params = SMOKE_MODELS[name]
    net = build_model(arch, 10, data.in_channels, data.mean, data.std, params).eval()
    return net.to(memory_format=torch.channels_last) if ours else net


def bench_pgd(data, repeats: int, eps: float = 0.1, steps: int = 10) -> list[dict]:
    """image x steps per second: plain torchattacks PGD loop (batch 128) vs our evaluation path."""
    x, y = data.x_eval, data.y_eval
    everyone = torch.ones(len(y), dtype=torch.bool)  # both variants attack every image
    rows, ratios, total_ours, total_base, work = [], [], 0.0, 0.0, 0
    roof = matmul_roof()
    alpha = 2.5 * eps / steps
    for name in SMOKE_MODELS:
        net, our_net = model(data, name), model(data, name, ours=True)

        def plain(net=net):
            attack = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=True)
            for xb, yb in zip(x.split(128), y.split(128), strict=True):
                adv = attack(xb, yb)
                with torch.no_grad():
                    net(adv).argmax(1)

        make = partial(ATTACKS.get("pgd"), eps=eps, norm="linf", steps=steps, step_size=alpha)
        ours = partial(robust_correct, our_net, make, x, y, everyone, eps, "linf", batch_size=512, progress=False)
        t_ours, t_base, ratio = paired_times(ours, plain, repeats)
        n_work = len(y) * steps
        # a step is a forward and a backward to the input only (no weight gradients): ~2 forwards
        flops = 2 * 2 * count_macs(net, tuple(x.shape[1:])) * n_work
        rows.append(row(f"pgd_eval:{name}", n_work / t_ours, n_work / t_base, "image*steps/s", ratio=ratio))
        rows.append(row(f"pgd_gflops_vs_roof:{name}", flops / t_ours / 1e9 / roof, flops / t_base / 1e9 / roof,
                        "fraction of matmul roof"))  # fmt: skip
        total_ours, total_base, work = total_ours + t_ours, total_base + t_base, work + n_work
        ratios.append(ratio)
    # all smoke models together: total work over total median time; ratio: geometric mean of the pair ratios
    rows.insert(0, row("pgd_eval", work / total_ours, work / total_base, "image*steps/s (all models)",
                       ratio=statistics.geometric_mean(ratios)))  # fmt: skip
    return rows


def bench_crafting(data, repeats: int, eps: float = 0.1, steps: int = 10) -> list[dict]:
    """The optional crafting settings on resnet20, each against the default path (folded, fp32,
    eager): ``torch.compile`` (its one-off compile time reported separately) and bf16 autocast
    (emulated, hence slower, on CPUs without AVX512-BF16/AMX)."""
    x, y = data.x_eval, data.y_eval
    everyone = torch.ones(len(y), dtype=torch.bool)
    net = model(data, "resnet20", ours=True)
    make = partial(ATTACKS.get("pgd"), eps=eps, norm="linf", steps=steps, step_size=2.5 * eps / steps)
    probe = (x[:8], y[:8])
    default = crafting_model(net, Crafting(), *probe, "cpu")

    def attack(attacker):
        return partial(robust_correct, net, make, x, y, everyone, eps, "linf", batch_size=512, progress=False,
                       attacker=attacker)  # fmt: skip

    t0 = time.perf_counter()
    compiled = crafting_model(net, Crafting(compile=True), *probe, "cpu")
    attack(compiled)()  # compiles for this batch shape
    compile_s = time.perf_counter() - t0
    n_work, rows = len(y) * steps, []
    for name, attacker in (
        ("compile", compiled),
        ("bf16", crafting_model(net, Crafting(precision="bf16"), *probe, "cpu")),
    ):
        t_opt, t_def, ratio = paired_times(attack(attacker), attack(default), repeats)
        rows.append(row(f"pgd_eval_{name}:resnet20", n_work / t_opt, n_work / t_def,
                        "image*steps/s (baseline = our default crafting)", ratio=ratio))  # fmt: skip
    rows.append(
        row("compile_seconds:resnet20", compile_s, float("nan"), "s, once per model and shape", ratio=float("nan"))
    )
    return rows


def reference_certify_counts(base, x, num: int, sigma: float, generator: torch.Generator, batch: int = 400):
    """Cohen et al.'s _sample_noise loop as published (batch 400, fp32, x.repeat, counts on the host)."""
    counts = torch.zeros(10, dtype=torch.long)
    with torch.no_grad():
        remaining = num
        while remaining > 0:
            b = min(batch, remaining)
            remaining -= b
            batch_x = x.repeat((b, 1, 1, 1))
            noise = torch.randn(batch_x.shape, generator=generator) * sigma
            predictions = base(batch_x + noise).argmax(1)
            counts += torch.bincount(predictions.cpu(), minlength=10)
    return counts


def bench_certify(data, repeats: int, num: int = 4000, sigma: float = 0.25) -> list[dict]:
    net = model(data, "simple_cnn")
    x = data.x_eval[0]
    # on the CPU the runner's certify.runtime = "auto" runs the noisy batches on ONNX Runtime
    smoothed = Smoothed(model(data, "simple_cnn", ours=True), 10, sigma, runtime="onnxruntime")
    ref = reference_certify_counts(net, x, num, sigma, torch.Generator().manual_seed(0))
    ours = smoothed.sample_counts(x, num, torch.Generator().manual_seed(0))
    if not torch.equal(ref, ours):
        raise SystemExit(f"certify: counts differ under the same seed: {ref.tolist()} vs {ours.tolist()}")
    t_ours, t_ref, ratio = paired_times(
        lambda: smoothed.sample_counts(x, num, torch.Generator().manual_seed(0)),
        lambda: reference_certify_counts(net, x, num, sigma, torch.Generator().manual_seed(0)),
        repeats,
    )
    return [row("certify", num / t_ours, num / t_ref, "noise samples/s", ratio=ratio)]


def plain_train(net, x, y, epochs: int, attack=None) -> None:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(epochs):
        net.train()
        for xb, yb in loader:
            if attack is not None:
                xb = attack(xb, yb)
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()


def bench_train(data, repeats: int, epochs: int = 2) -> list[dict]:
    x, y = data.x_train, data.y_train
    recipe = TrainSpec(epochs=epochs, lr=0.05, batch_size=64, augment="none")
    n = len(y) * epochs
    t_ours, t_base, ratio = paired_times(
        lambda: train(model(data, "simple_cnn"), x, y, recipe, 0, progress=False),
        lambda: plain_train(model(data, "simple_cnn"), x, y, epochs),
        repeats,
    )
    rows = [row("train_standard", n / t_ours, n / t_base, "images/s", ratio=ratio)]
    spec = DEFENSES.get("pgd_at").spec(name="pgd_at", eps=0.1, steps=5)

    def plain_adv():
        net = model(data, "simple_cnn")
        plain_train(net, x, y, epochs, torchattacks.PGD(net, eps=0.1, alpha=0.05, steps=5))

    def ours_adv():
        DEFENSES.get("pgd_at")(model(data, "simple_cnn"), x, y, recipe, spec, 0, "cpu", progress=False)

    t_ours, t_base, ratio = paired_times(ours_adv, plain_adv, repeats)
    rows.append(row("train_adversarial", n / t_ours, n / t_base, "images/s", ratio=ratio))
    return rows


def bench_latency(data, repeats: int = 5, pairs: int = 30) -> list[dict]:
    """Our harness's p50 vs the simplest timing loop, as the median of ``pairs`` interleaved A-B/B-A
    pairs (drift between pairs cancels in each pair's ratio); the harness's own cost per timed call
    (timing a no-op); and the coefficient of variation of our p50 over ``repeats`` repeats with the
    runner's default latency settings, next to the bare loop's over the same interleaved windows
    (the machine's own run-to-run noise, which no harness can remove)."""
    net = model(data, "resnet20")
    x = data.x_eval[:1]
    lat = LatencySpec()
    with torch.inference_mode():

        def bare(n: int = 100, seconds: float = 0.0) -> float:
            samples, deadline = [], time.perf_counter() + seconds
            while len(samples) < n or time.perf_counter() < deadline:
                t0 = time.perf_counter()
                net(x)
                samples.append(time.perf_counter() - t0)
            return statistics.median(samples) * 1e3

        def ours() -> float:
            return measure(lambda: net(x), 1, warmup=5, min_repeats=100, budget_s=0.0).p50_ms

        ratios, ours_ms, bare_ms = [], [], []
        for i in range(pairs):
            if i % 2 == 0:
                a, b = ours(), bare()
            else:
                b, a = bare(), ours()
            ours_ms.append(a)
            bare_ms.append(b)
            ratios.append(b / a)
        repeated, repeated_bare = [], []
        for _ in range(repeats):
            repeated.append(measure(lambda: net(x), 1, lat.warmup, lat.min_repeats, lat.budget_s).p50_ms)
            repeated_bare.append(bare(lat.min_repeats, lat.budget_s))
    noop_us = measure(lambda: None, 1, warmup=5, min_repeats=10_000, budget_s=0.0).p50_ms * 1e3
    cv = statistics.stdev(repeated) / statistics.mean(repeated)
    cv_bare = statistics.stdev(repeated_bare) / statistics.mean(repeated_bare)
    return [
        row("latency_overhead", statistics.median(ours_ms), statistics.median(bare_ms),
            "ms p50 (ratio = median over A-B pairs of bare/ours)", ratio=statistics.median(ratios)),
        row("latency_harness_cost", noop_us, statistics.median(bare_ms) * 1e3,
            "us per timed call (timing a no-op) vs the bare p50 in us; ratio = the fraction"),
        row("latency_cv", cv, 0.05, f"coefficient of variation of p50 over {repeats} repeats (target <= 0.05)",
            ratio=0.05 / cv if cv else float("inf")),
        row("latency_cv_bare", cv_bare, 0.05, "the same for the bare loop in the same windows: the machine's noise",
            ratio=0.05 / cv_bare if cv_bare else float("inf")),
    ]  # fmt: skip


def bench_smoke(target_s: float = 300.0) -> list[dict]:
    """The whole smoke suite from a cold model cache, wall time per stage."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "robustbench_cnn", "run", str(ROOT / "suites" / "smoke.toml"), "--out", tmp,
               "--no-progress", "--no-report"]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        manifest = json.loads(next(Path(tmp, "smoke").glob("*T*Z-*/manifest.json")).read_text())
    wall = manifest["wall_seconds"]
    rows = [row("smoke_wall", wall, target_s, "s (baseline = 5-minute target)", ratio=target_s / wall)]
    for stage, seconds in manifest["stage_seconds"].items():
        rows.append(row(f"smoke_stage:{stage}", seconds, float("nan"), "s", ratio=float("nan")))
    return rows


def row(benchmark: str, ours: float, baseline: float, unit: str, ratio: float | None = None) -> dict:
    return {"benchmark": benchmark, "ours": ours, "baseline": baseline, "unit": unit,
            "ratio": ours / baseline if ratio is None else ratio}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "perf")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the crafting options and the smoke-suite run")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda[:N]: the GPU pairs of benchmarks/gpu.py")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        return write(gpu_rows(torch.device(args.device), args.repeats), args.out)
    data = load_dataset(DatasetSpec(name="digits", image_size=16), None)
    rows = []
    for name, fn in (("pgd", bench_pgd), ("certify", bench_certify), ("train", bench_train)):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += fn(data, args.repeats)
    rows += bench_latency(data)
    if not args.quick:
        print("running crafting options (compile, bf16) ...", file=sys.stderr, flush=True)
        rows += bench_crafting(data, args.repeats)
        print("running the smoke suite ...", file=sys.stderr, flush=True)
        rows += bench_smoke()
    return write(rows, args.out)


def gpu_rows(device: torch.device, repeats: int) -> list[dict]:
    """The GPU pairs (benchmarks/gpu.py) on 32x32 images."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu import bench_certify_gpu, bench_pgd_gpu

    if not torch.cuda.is_available():
        raise SystemExit("perf --device cuda: torch sees no CUDA device")
    data = load_dataset(DatasetSpec(name="digits", image_size=32), None)
    print(f"running GPU pairs on {torch.cuda.get_device_name(device)} ...", file=sys.stderr, flush=True)
    return bench_pgd_gpu(data, device, paired_times, row, repeats) + bench_certify_gpu(
        data, device, paired_times, row, repeats
    )


def write(rows: list[dict], out: Path) -> int:
    """perf.csv, perf.md and environment.json in a new run folder under ``out``; ``out/latest`` points at it."""
    df = pd.DataFrame(rows)
    run_dir = out / new_run_id()
    run_dir.mkdir(parents=True)
    df.to_csv(run_dir / "perf.csv", index=False, float_format="%.6g")
    (run_dir / "environment.json").write_text(json.dumps(environment(), indent=2, default=str))
    table = df.to_markdown(index=False, floatfmt=".4g")
    (run_dir / "perf.md").write_text(f"# perf {run_dir.name}\n\n{table}\n")
    latest = out / "latest"
    latest.unlink(missing_ok=True)
    latest.symlink_to(run_dir.name, target_is_directory=True)
    print(table)
    print(f"\nresults: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
