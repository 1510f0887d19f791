"""Independent check of a finished run's headline worst case (issue #16's acceptance): for every model
and every (norm, eps > 0) it evaluated, a plain 100-step, 5-restart PGD on cross-entropy and on the
CW margin (each restart attacks the survivors of the previous ones), against the run's worst_case row.

    python benchmarks/strong_attack.py RUN_DIR [--steps 100] [--restarts 5] [--images N]

Prints one row per (model, norm, eps): worst case, strong attack, and worst case - strong (points);
exits 1 if any worst case exceeds the strong attack by more than --slack points (default 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch

from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.attacks.margin import MarginPGD
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.data import load_dataset
from robustbench_cnn.models import build_model
from robustbench_cnn.train.cache import load_weights


def strong_robust(model, x, y, eps: float, norm: str, steps: int, restarts: int, seed: int) -> float:
    import torchattacks

    with torch.no_grad():
        clean = model(x).argmax(1) == y
    alpha = 2.5 * eps / steps
    ce = (lambda m: torchattacks.PGDL2(m, eps=eps, alpha=alpha, steps=steps, random_start=True)) if norm == "l2" \
        else (lambda m: torchattacks.PGD(m, eps=eps, alpha=alpha, steps=steps, random_start=True))  # fmt: skip
    cw = partial(MarginPGD, eps=eps, alpha=alpha, steps=steps, norm=norm)
    mask = clean.clone()
    for make in (ce, cw):
        mask &= robust_correct(model, make, x, y, mask, eps, norm, batch_size=360, restarts=restarts, seed=seed,
                               progress=False)  # fmt: skip
    return float(mask.float().mean())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--slack", type=float, default=1.0)
    a = p.parse_args()
    manifest = json.loads((a.run_dir / "manifest.json").read_text())
    spec = load_suite(a.run_dir / "suite.toml").spec
    data = load_dataset(spec.dataset, None)
    x, y = data.x_eval[: a.images], data.y_eval[: a.images]
    table = read_csv(a.run_dir / "results.csv")
    worst = table[(table.attack == "worst_case") & (table.format == "torch")]
    bad = 0
    print("model,norm,eps,worst_case,strong,diff_pt")
    for m in spec.models:
        info = manifest["models"][m.name]
        model = build_model(info["arch"], data.num_classes, data.in_channels, data.mean, data.std, info["params"])
        load_weights(model, Path(info["weights"]) / "model.safetensors")
        model.eval()
        for r in worst[worst.model == m.name].itertuples():
            if r.eps == 0:
                continue
            strong = strong_robust(model, x, y, float(r.eps), r.norm, a.steps, a.restarts, manifest["seed"])
            diff = (r.value - strong) * 100
            bad += diff > a.slack
            print(f"{m.name},{r.norm},{r.eps:g},{r.value:.4f},{strong:.4f},{diff:+.1f}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
