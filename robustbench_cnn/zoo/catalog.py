"""The zoo's entries: the published checkpoints of ``../shared/zoo`` (see its README for the
architectures in words, the preprocessing, the published figures and their exact protocols)."""

from __future__ import annotations

from types import MappingProxyType

from robustbench_cnn.zoo.entries import IMAGENET, RAW, Figure, Preprocess, ZooEntry

ADVERTORCH = ("BorealisAI/advertorch advertorch_examples/trained_models/; figures from "
              "attack_benchmarks/benchmark_iterative_projected_gradient.py")  # fmt: skip


def _pgd40(value: float, who: str) -> Figure:
    """PGD-40 at Linf 0.3 from the clean image: 40 steps of 0.01, no random start, cross-entropy (the
    suite's ``bim``). advertorch's benchmark (``LinfPGDAttack(rand_init=False)``) and TRADES' own
    FGSM^k evaluation: on the TRADES SmallCNN it gives exactly the published 96.07% only without a
    random start (with one: 96.8%, measured)."""
    return Figure("attack", value, attack="bim", norm="linf", eps=0.3, steps=40, step_size=0.01, random_start=False,
                  loss="ce", name=f"PGD-40 ({who})",
                  protocol=f"{who}: PGD-40, step 0.01, no random start, cross-entropy")  # fmt: skip


def _wong_kolter(kind: str, value: float, attack: str, name: str) -> Figure:
    """Wong & Kolter's README table at Linf eps 0.1 (errors there; accuracies here)."""
    return Figure(kind, value, attack=attack, norm="linf", eps=0.1, name=name,  # type: ignore[arg-type]
                  protocol=f"Wong & Kolter 2018, README table: {name}")  # fmt: skip


AKAMASTER = "akamaster/pytorch_resnet_cifar10 pretrained_models/ (He et al. 2016, option-A shortcuts)"
_CIFAR_CLEAN = {20: 0.9173, 32: 0.9263, 44: 0.9310, 56: 0.9339}
_CIFAR_SHA = {
    20: "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
    32: "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850",
    44: "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4",
    56: "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
}

ENTRIES: tuple[ZooEntry, ...] = (
    ZooEntry(
        "advertorch_lenet5", "mnist_lenet5_clntrained.pt",
        "551a11267982991fb0c9f74e9094de19e54b51455eff9bd1c19c77a69d85156a", "mnist", RAW, ADVERTORCH, "LGPL-3.0",
        arch="lenet5_advertorch",
        figures=(Figure("clean", 0.9889), _pgd40(0.0, "advertorch")),
        note="standard training; PGD-40 at eps 0.3: attack success 100%",
    ),
    ZooEntry(
        "advertorch_lenet5_pgd", "mnist_lenet5_advtrained.pt",
        "b89abfcfe8b33235fe8f8e964188d82a97c56a12ffe25132eaba197e40ac7658", "mnist", RAW, ADVERTORCH, "LGPL-3.0",
        arch="lenet5_advertorch", threat=("linf", 0.3),
        figures=(Figure("clean", 0.9864), _pgd40(0.932, "advertorch")),
        note="PGD adversarial training (Madry et al.) at eps 0.3; attack success 6.8% over all 10k test images",
    ),
    ZooEntry(
        "trades_smallcnn", "mnist_smallcnn_trades.pt",
        "5b99888064f692047d5592b38df2dde126aa1b991a26c6aad683ce709634bea0", "mnist", RAW,
        "yaodongyu/TRADES checkpoints/model_mnist_smallcnn.pt, commit f94f414", "MIT",
        arch="smallcnn_trades", threat=("linf", 0.3),
        figures=(
            Figure("clean", 0.9948),
            _pgd40(0.9607, "TRADES"),
            Figure("best_attack", 0.9333, attack="worst_case", norm="linf", eps=0.3, name="FAB",
                   protocol="FAB, TRADES MNIST leaderboard"),
            Figure("best_attack", 0.9246, attack="worst_case", norm="linf", eps=0.3, name="best published",
                   protocol="the strongest attack of the TRADES MNIST leaderboard"),
        ),
        note="TRADES (Zhang et al. 2019) at eps 0.3",
    ),
    ZooEntry(
        "wong_kolter_convex", "mnist_convex_wong_kolter.pth",
        "95014ab0c04c73f48b3be0cb7acc42aff60ce4420c6c43bec25e9a1447279e08", "mnist", RAW,
        "locuslab/convex_adversarial models/mnist.pth, README table", "MIT",
        arch="convex_small_mnist", threat=("linf", 0.1),
        figures=(
            Figure("clean", 0.982),
            _wong_kolter("attack", 0.961, "fgsm", "FGSM"),
            _wong_kolter("attack", 0.959, "pgd", "PGD"),
            _wong_kolter("certified", 0.942, "worst_case", "certified"),
        ),
        note="provably robust training (Wong & Kolter 2018) at eps 0.1: no correct attack goes below 94.2%",
    ),
    *(
        ZooEntry(
            f"cifar10_resnet{depth}", f"cifar10_resnet{depth}-{_CIFAR_SHA[depth][:8]}.th", _CIFAR_SHA[depth], "cifar10",
            IMAGENET, AKAMASTER, "BSD-2-Clause", arch="resnet_cifar_a", params=MappingProxyType({"depth": depth}),
            image_shape=(3, 32, 32),
            figures=(Figure("clean", _CIFAR_CLEAN[depth]),),
            note="standard training; the file's best_prec1 differs slightly from the README's test error",
        )
        for depth in (20, 32, 44, 56)
    ),
    *(
        ZooEntry(
            f"mlperf_tiny_resnet8_{precision}", f"cifar10_resnet8_mlperf_tiny_{precision}.tflite", sha, "cifar10",
            Preprocess(input_range="0..255"),
            "mlcommons/tiny benchmark/training/image_classification/trained_models/", "Apache-2.0", kind="artifact",
            image_shape=(3, 32, 32),
            figures=(Figure("clean", 0.85, name="quality target",
                            protocol="MLPerf Tiny closed-division quality target"),),
            note="an edge build made by another toolchain (Keras -> TFLite); raw RGB 0..255 input"
            + ("; full-integer int8 (input scale 1, zero point -128)" if precision == "int8" else ""),
        )
        for precision, sha in (
            ("float", "b5c0046d6e0328b4956afd6baa29555a29b1f1c65bdd45aaed75b7cd484d9f79"),
            ("int8", "3c002613d1b2475eb51dd78dfb85a546c8ae658dee71cf6ade43b022fe205415"),
        )
    ),
)  # fmt: skip
