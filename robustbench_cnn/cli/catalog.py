"""The commands that list or package: ``list`` (registered plugins), ``zoo`` (list, measure), ``edge bundle``."""

from __future__ import annotations

import argparse
import sys

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.cli.artifact_bundle import build_artifact_bundle
from robustbench_cnn.cli.bundle import build_bundle
from robustbench_cnn.cli.options import default_out, folder, zoo_dir_of
from robustbench_cnn.cli.zoo import MeasureOptions, measure
from robustbench_cnn.compress import COMPRESSORS
from robustbench_cnn.data import DATASETS
from robustbench_cnn.defenses import DEFENSES
from robustbench_cnn.errors import InputError
from robustbench_cnn.models import MODELS
from robustbench_cnn.zoo.listing import render_list


def cmd_zoo(args: argparse.Namespace) -> int:
    if args.zoo_command == "list":
        sys.stdout.write(render_list(zoo_dir_of(args)))
        return 0
    opts = MeasureOptions(args.name, args.data_dir.resolve() if args.data_dir else None, zoo_dir_of(args),
                          folder(args.out or default_out(), "--out"), args.dataset, args.data_path, args.eval_size,
                          tuple(args.eps), args.queries, args.attack_size, latency=not args.no_latency)  # fmt: skip
    run_dir, text = measure(opts)
    sys.stdout.write(text + f"results: {run_dir}\n")
    return 0


def parameters(entry: object) -> str:
    """``name=default`` of a plugin's parameters: its spec's fields, else its factory's keywords."""
    import inspect

    fields = getattr(getattr(entry, "spec", None), "model_fields", None)
    if fields is not None:
        items = [(k, "required" if f.is_required() else repr(f.get_default(call_default_factory=True)))
                 for k, f in fields.items() if k != "name"]  # fmt: skip
    elif callable(entry):
        skip = ("num_classes", "in_channels", "model", "data_dir", "download", "split_seed")
        params = inspect.signature(entry).parameters.values()
        items = [(p.name, "required" if p.default is p.empty else repr(p.default)) for p in params
                 if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]  # fmt: skip
    else:
        items = []
    return ", ".join(f"{k}={v}" for k, v in items) or "(no parameters)"


def cmd_list(args: argparse.Namespace) -> int:
    registries = (("datasets", DATASETS), ("models", MODELS), ("attacks", ATTACKS), ("defenses", DEFENSES),
                  ("compressions", COMPRESSORS))  # fmt: skip
    for title, reg in registries:
        sys.stdout.write(f"{title}:\n")
        for name in reg.names():
            doc = (reg.get(name).__doc__ or "").strip().splitlines()
            sys.stdout.write(f"  {name:<14} {doc[0] if doc else ''}\n")
            if args.params:
                sys.stdout.write(f"  {'':<14}   {parameters(reg.get(name))}\n")
    return 0


def cmd_edge(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.artifact is None) or (args.artifact is not None) != (args.data is not None):
        raise InputError("edge bundle: give a RUN_DIR, or --artifact MODEL.tflite|MODEL.onnx with --data "
                         "EVAL.npz|DATASET (not both)")  # fmt: skip
    if args.artifact is not None:
        out = build_artifact_bundle(args.artifact.resolve(), args.data, args.out.resolve(), args.input_range,
                                    tuple(args.eps), args.queries, args.accuracy_tol, args.agreement, args.force,
                                    data_dir=args.data_dir.resolve() if args.data_dir else None,
                                    eval_size=args.eval_size)  # fmt: skip
    else:
        out = build_bundle(args.run_dir, args.out.resolve(), args.eval_size, args.accuracy_tol, args.agreement,
                           args.adversarial_agreement, args.force, args.include_failed_parity)  # fmt: skip
    sys.stdout.write(f"bundle: {out}\nvalidate it with: cd {out} && python -m robustbench_cnn.edge validate .\n")
    return 0
