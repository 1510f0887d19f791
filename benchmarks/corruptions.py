"""Cost of the full corruption set: 14 corruptions x 5 severities on 1,000 32x32 RGB images, generation
(numpy, robustbench_cnn.corruptions) and resnet20 inference timed separately, against the 60 s goal.

    python benchmarks/corruptions.py            # the 100 CIFAR-10 test images of ../shared/zoo, x10
    python benchmarks/corruptions.py --images 200

The images are the zoo's first 100 CIFAR-10 test images repeated (each copy its own image index, so its
own random draws); without ../shared/zoo, smooth random images. Run it alone: a timing is only meaningful
on a quiet machine. Prints one line per phase and the total.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robustbench_cnn.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from robustbench_cnn.models import build_model

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "zoo" / "data" / "cifar10-test-first100"
GOAL_S = 60.0


def images(n: int) -> tuple[np.ndarray, str]:
    path = CIFAR / "cifar10_test_first100.npz"
    if path.is_file():
        with np.load(path) as data:
            x = data["x"].transpose(0, 3, 1, 2).astype(np.float32) / 255
        return np.concatenate([x] * (n // len(x) + 1))[:n], f"CIFAR-10 test (first 100, x{n // 100})"
    from scipy import ndimage

    x = ndimage.gaussian_filter(np.random.default_rng(0).random((n, 3, 32, 32)), (0, 0, 1.5, 1.5))
    return ((x - x.min()) / (x.max() - x.min())).astype(np.float32), "smooth random images"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    x, source = images(args.images)
    torch.manual_seed(0)
    model = build_model("resnet", 10, 3, [0.5] * 3, [0.25] * 3, {"depth": 20}).eval()
    gen_s = infer_s = 0.0
    for name in CORRUPTIONS:
        t0 = time.perf_counter()
        sets = [corrupt(x, name, s, seed=0) for s in SEVERITIES]
        t1 = time.perf_counter()
        with torch.inference_mode():
            for batch in sets:
                for xb in torch.from_numpy(batch).split(args.batch_size):
                    model(xb.float() / 255)
        t2 = time.perf_counter()
        gen_s, infer_s = gen_s + t1 - t0, infer_s + t2 - t1
        print(f"{name:18s} generate {t1 - t0:6.2f} s  resnet20 {t2 - t1:6.2f} s", file=sys.stderr, flush=True)
    total = gen_s + infer_s
    print(f"{len(CORRUPTIONS)} corruptions x {len(SEVERITIES)} severities on {len(x)} images ({source}), "
          f"{torch.get_num_threads()} threads: generation {gen_s:.1f} s, resnet20 inference {infer_s:.1f} s, "
          f"total {total:.1f} s (goal {GOAL_S:.0f} s: {'met' if total <= GOAL_S else 'missed'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
