"""Minimal reproduction of a heap corruption in torch 2.14.1's oneDNN (CPU) backward pass, with torch alone.

A residual network whose stages have 8-12 channels (what magnitude pruning leaves of a ResNet-20), in
channels_last, trained with SGD on two threads, dies within a few hundred steps on an AVX-512 CPU with
``free(): invalid next size (normal)``, SIGSEGV or SIGABRT. It does not with 16+ channels per stage,
without the 1x1 shortcut convs, in NCHW, with one thread, or under ``ONEDNN_MAX_CPU_ISA=AVX2``.
robustbench-cnn avoids the path by running such models in NCHW (``models.normalize.layout``).

    python tools/onednn_nhwc_crash.py            # exit -11/-6 on an affected machine, "ok" otherwise
    python tools/onednn_nhwc_crash.py --width 16 # "ok": the same network at 16 channels
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.shortcut(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=11, help="channels of the first stage (then 2x, 4x)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nchw", action="store_true", help="contiguous (NCHW) instead of channels_last")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    w = args.width
    layers: list[nn.Module] = [nn.Conv2d(1, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
    cin = w
    for cout, stride in [(w, 1)] * 3 + [(2 * w, 2)] + [(2 * w, 1)] * 2 + [(4 * w, 2)] + [(4 * w, 1)] * 2:
        layers.append(Block(cin, cout, stride))
        cin = cout
    fmt = torch.contiguous_format if args.nchw else torch.channels_last
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)).to(memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for step in range(300):
        n = 64 if step % 23 else 29
        x = torch.rand(n, 1, 16, 16).contiguous(memory_format=fmt)
        loss = F.cross_entropy(net(x), torch.randint(0, 10, (n,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sys.stdout.write("ok\n")


if __name__ == "__main__":
    main()
