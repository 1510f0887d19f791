"""sha256 of every corruption at every severity on a fixed batch: run it on two machines (or under
``tools/edge_arm64.py``'s emulated arm64 Python) with the same numpy, scipy and Pillow and compare.

    python tools/corruption_bytes.py IMAGES.npy        # float32 (N, C, H, W) in [0, 1]

Prints the machine, the sha256 over all sets, then one short digest per corruption.
"""

from __future__ import annotations

import hashlib
import platform
import sys

import numpy as np

from robustbench_cnn.corruptions import CORRUPTIONS, SEVERITIES, corrupt


def main(argv: list[str]) -> int:
    x = np.load(argv[0], allow_pickle=False)
    total, lines = hashlib.sha256(), []
    for name in CORRUPTIONS:
        one = hashlib.sha256()
        for severity in SEVERITIES:
            data = corrupt(x, name, severity, seed=3).tobytes()
            total.update(data)
            one.update(data)
        lines.append(f"{name} {one.hexdigest()[:12]}")
    sys.stdout.write("\n".join([f"{platform.machine()} {total.hexdigest()}", *lines]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
