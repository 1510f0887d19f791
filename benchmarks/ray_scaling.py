"""``--executor ray`` against the in-process runner, side by side in one process (run it alone).

1. Scheduling overhead per task: trivial tasks with the executor's options (1 CPU, retries, no
   exception retries), submitted pipelined and one at a time; milliseconds per task.
2. A suite (default: suites/smoke.toml) with a warm model cache: in-process wall time, then
   ``--executor ray`` wall time on a local cluster, and the cluster's start time; the ratio.
3. A sharded certify cell (one Gaussian model, ``--certify-images`` images in shards of 10) on a
   local cluster of 1 and of N workers (1 CPU each): the speedup.

    python benchmarks/ray_scaling.py [--suite suites/smoke.toml] [--workers 2] [--skip-suite]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CERTIFY_SUITE = """
name = "certify_scaling"
seed = 0
device = "cpu"
[dataset]
name = "digits"
train_size = 600
eval_size = {images}
[[models]]
name = "noisy"
arch = "simple_cnn"
params = {{ width = 16, stages = 2 }}
train = {{ epochs = 3 }}
defense = {{ name = "gaussian", sigma = 0.25 }}
[[evaluations]]
attack = "fgsm"
eps = [0.0]
[ensemble]
enabled = false
[checks]
enabled = false
[latency]
enabled = false
[certify]
n0 = 100
n = {n}
eval_size = {images}
runtime = "torch"
batch_size = 1000
[performance]
certify_shard_size = 10
"""


def start_cluster(cpus: int) -> float:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             log_to_driver=False)  # fmt: skip
    return time.perf_counter() - t0


def _noop(i: int) -> int:
    return i


def scheduling_overhead(n: int = 1000) -> tuple[float, float]:
    """(pipelined, one-at-a-time) milliseconds per trivial task with the executor's task options."""
    import ray

    from robustbench_cnn.engine.ray_executor import MAX_RETRIES

    task = ray.remote(_noop).options(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)
    ray.get([task.remote(i) for i in range(50)])  # workers started
    t0 = time.perf_counter()
    ray.get([task.remote(i) for i in range(n)])
    pipelined = (time.perf_counter() - t0) / n * 1000
    t0 = time.perf_counter()
    for i in range(n // 10):
        ray.get(task.remote(i))
    serial = (time.perf_counter() - t0) / (n // 10) * 1000
    return pipelined, serial


def run_once(suite: Path, out: Path, cache: Path, executor: str) -> float:
    from robustbench_cnn.config.load import load_suite
    from robustbench_cnn.engine.runner import RunOptions, run_suite

    t0 = time.perf_counter()
    result = run_suite(load_suite(suite), RunOptions(out_root=out, cache_dir=cache, progress=False, executor=executor))
    assert result.manifest["status"].startswith("complete"), result.manifest["status"]
    return time.perf_counter() - t0


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, default=ROOT / "suites" / "smoke.toml")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--certify-images", type=int, default=80)
    parser.add_argument("--certify-n", type=int, default=20000)
    parser.add_argument("--skip-suite", action="store_true", help="only the overhead and certify parts")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ray_scaling-"))
    print(f"machine: {os.cpu_count()} CPUs; workers {args.workers}; scratch {tmp}")

    start = start_cluster(args.workers)
    pipelined, serial = scheduling_overhead()
    print(f"[overhead] local cluster start {start:.2f} s; per trivial task {pipelined:.2f} ms pipelined, "
          f"{serial:.2f} ms one at a time (goal <= 5 ms)")  # fmt: skip
    ray.shutdown()

    if not args.skip_suite:
        cache = tmp / "cache"
        run_once(args.suite, tmp / "warm", cache, "local")  # trains: both timed runs below hit the cache
        local = run_once(args.suite, tmp / "local", cache, "local")
        start = start_cluster(args.workers)
        distributed = run_once(args.suite, tmp / "ray", cache, "ray")
        ray.shutdown()
        print(f"[suite] {args.suite.name}, warm cache: in-process {local:.1f} s, ray {distributed:.1f} s "
              f"(+ cluster start {start:.1f} s): ratio {distributed / local:.3f} (goal <= 1.1)")  # fmt: skip

    suite = tmp / "certify.toml"
    suite.write_text(CERTIFY_SUITE.format(images=args.certify_images, n=args.certify_n))
    cache = tmp / "cert-cache"
    run_once(suite, tmp / "cert-warm", cache, "local")
    times = {}
    for workers in (1, args.workers):
        start_cluster(workers)
        times[workers] = run_once(suite, tmp / f"cert{workers}", cache, "ray")
        ray.shutdown()
    speedup = times[1] / times[args.workers]
    print(f"[certify] {args.certify_images} images x n={args.certify_n} in shards of 10: 1 worker {times[1]:.1f} s, "
          f"{args.workers} workers {times[args.workers]:.1f} s: speedup {speedup:.2f} "
          f"(goal >= {0.8 * args.workers:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
