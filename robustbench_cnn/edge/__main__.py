"""``python -m robustbench_cnn.edge validate BUNDLE_DIR``: verify and run an edge bundle (no torch)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from robustbench_cnn.edge.bundle_format import RESULTS_DIR, sums_text
from robustbench_cnn.edge.manifest import read_manifest
from robustbench_cnn.edge.selfcheck import check_self, code_root, own_hashes, sums_digest
from robustbench_cnn.errors import RobustBenchError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m robustbench_cnn.edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    val = sub.add_parser("validate", help="verify checksums, run every model, compare with the expectations")
    val.add_argument("bundle", type=Path, help="the bundle directory (from robustbench-cnn edge bundle)")
    val.add_argument("--out", type=Path, help="results CSV (default BUNDLE/validation/results.csv)")
    val.add_argument("--threads", type=int, help="interpreter threads (default min(4, CPUs))")
    val.add_argument("--budget-s", type=float, default=1.0, help="latency time budget per model (default 1 s)")
    val.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    val.add_argument("--model", action="append", help="validate only this model (repeatable)")
    val.add_argument("--self-check", action="store_true",
                     help="print the validator's own sha256, check them against the manifest; run nothing")  # fmt: skip
    return parser


def self_check(bundle: Path) -> int:
    """Print ``sha256sum`` lines of the running validator's files and check them against the manifest."""
    hashes = own_hashes()
    sys.stdout.write(f"# validator at {code_root()}\n{sums_text(hashes)}")
    manifest = read_manifest(bundle)
    check_self(manifest, hashes)
    sys.stdout.write(f"the validator's {len(hashes)} files match {bundle / 'manifest.json'}\n")
    sys.stdout.write(f"SHA256SUMS sha256 {sums_digest(manifest, hashes)} (compare with the hash shipped separately)\n")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from robustbench_cnn.edge.validate import validate  # numpy and the runtimes: --self-check needs only the stdlib

    out = args.out or args.bundle / RESULTS_DIR / "results.csv"
    results, env = validate(args.bundle, out, args.threads, not args.no_latency, args.budget_s, args.model)
    say = sys.stdout.write
    say(f"{env['runtime']} {env['runtime_version']} on {env['machine']} (python {env['python']})\n")
    for res in results:
        acc = {r["metric"] if r["metric"] != "robust_acc" else f"robust {r['attack']}@{r['eps']:g}": r["value"]
               for r in res.rows if r["metric"] in ("clean_acc", "robust_acc", "mean_corruption_acc",
                                                    "latency_ms_p50")}  # fmt: skip
        shown = ", ".join(f"{k} {v:.4g}" for k, v in acc.items())
        say(f"{'FAIL' if res.failures else 'ok  '} {res.label}: {shown}\n")
        for failure in res.failures:
            say(f"     {failure}\n")
    for label, reason in env["skipped"].items():
        say(f"skip {label}: {reason}\n")
    failed = sum(bool(r.failures) for r in results)
    say(f"{len(results) - failed}/{len(results)} models match their expectations; results: {out}\n")
    return 1 if failed or not results else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return self_check(args.bundle) if args.self_check else _validate(args)
    except RobustBenchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except ImportError as exc:  # no TFLite runtime (or no ONNX Runtime for an .onnx) installed
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
