"""Prepare a suite's models: build each one and fill it from its checkpoint, the model cache, or by
training (its recipe, defense or compression step); and, on a worker, load a prepared model again."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robustbench_cnn.compress import COMPRESSORS, CompressJob
from robustbench_cnn.config.spec import ModelSpec
from robustbench_cnn.data import ImageDataset
from robustbench_cnn.defenses import DEFENSES
from robustbench_cnn.engine.context import RunContext
from robustbench_cnn.engine.planning import model_identity
from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.models import Normalized, build_model
from robustbench_cnn.models.sources import ModelSourceError
from robustbench_cnn.train.cache import WEIGHTS, ModelCache, cache_key, code_fingerprint, load_weights, sha256_file
from robustbench_cnn.train.loop import to_device, train
from robustbench_cnn.train.pinned import PIN_ENV, in_pinned_child, training_mode
from robustbench_cnn.zoo import Preprocess, require_shape

log = logging.getLogger(__name__)


def normalization(spec: ModelSpec, data: ImageDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) of ``spec``'s normalization layer on [0, 1] images: its declared preprocessing,
    else the training images' statistics (models the suite trains)."""
    if spec.zoo is not None:
        require_shape(spec.zoo, (data.in_channels, data.image_size, data.image_size), f"model '{spec.name}'")
    return preprocess_stats(spec.preprocess, data, f"model '{spec.name}'")


def preprocess_stats(
    p: Preprocess | str | None, data: ImageDataset, what: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on [0, 1] images of a declared preprocessing (``None``/``"dataset"``: the training
    images' statistics), one value per channel of ``data``."""
    if p is None or p == "dataset":
        return data.mean, data.std
    assert isinstance(p, Preprocess)
    mean, std = p.on_unit_images()
    for values in (mean, std):
        if len(values) not in (1, data.in_channels):
            raise ModelSourceError(f"{what}: preprocess has {len(values)} values for {data.in_channels}-channel "
                                   "images; give one per channel or one for all")  # fmt: skip
    return mean * (data.in_channels // len(mean)), std * (data.in_channels // len(std))


def build(ctx: RunContext, spec: ModelSpec) -> Normalized:
    """The model's architecture with its seeded initial weights, on the run's device."""
    torch.manual_seed(ctx.seed)  # the same seed gives the same initial weights
    data = ctx.data
    mean, std = normalization(spec, data)
    model = build_model(spec.arch, data.num_classes, data.in_channels, mean, std, spec.params,
                        base_dir=ctx.base_dir, image_size=data.image_size)  # fmt: skip
    to_device(model, ctx.device)  # before a defense or compression step builds anything on it
    return model


def _train(ctx: RunContext, spec: ModelSpec, model: Normalized, models: Mapping[str, Normalized]):
    """Train ``model`` by the entry's recipe and defense, or derive it by its compression step."""
    data = ctx.data

    def finetune(net: Normalized, loss_fn=None):
        args = (net, data.x_train, data.y_train, spec.train)
        kwargs: dict[str, Any] = {"desc": f"train {spec.name}", "progress": ctx.progress}
        if spec.defense is None:
            return train(*args, ctx.seed, ctx.device, **kwargs, loss_fn=loss_fn)

        return DEFENSES.get(spec.defense.name)(*args, spec.defense, ctx.seed, ctx.device, **kwargs)

    if spec.compress is None:
        return finetune(model)

    job = CompressJob({u: models[u] for u in spec.compress.upstream}, data, finetune, ctx.seed, ctx.device,
                      ctx.progress)  # fmt: skip
    return COMPRESSORS.get(spec.compress.name)(model, spec.compress, job)


def trained_identity(ctx: RunContext, spec: ModelSpec, keys: Mapping[str, str]) -> dict[str, Any]:
    """What the cache key of a model the suite trains hashes (``keys``: its upstream models' keys)."""
    upstream = [keys[u] for u in spec.compress.upstream] if spec.compress else []
    code = code_fingerprint(spec.arch, ctx.spec.plugins, ctx.base_dir)
    mode = training_mode(ctx.spec.performance.reproducible_training, ctx.device.type)
    return model_identity(spec, ctx.seed, ctx.data.fingerprint, ctx.data.num_classes, upstream, code, mode)


def untrained(ctx: RunContext, cache: ModelCache) -> list[str]:
    """The suite's models that preparing would train (no checkpoint, no cache entry), in order."""
    keys: dict[str, str] = {}
    missing = []
    for spec in ctx.spec.models:
        if spec.checkpoint is not None:
            continue
        for up in (u for u in (spec.compress.upstream if spec.compress else ()) if u not in keys):
            keys[up] = sha256_file(ctx.checkpoint(ctx.model(up)))[:20]  # a checkpoint's key, as prepare_model's
        keys[spec.name] = cache_key(trained_identity(ctx, spec, keys))
        if not (cache.entry(spec.arch, keys[spec.name]) / WEIGHTS).is_file():
            missing.append(spec.name)
    return missing


def prepare_model(
    ctx: RunContext, spec: ModelSpec, cache: ModelCache, models: Mapping[str, Normalized], keys: Mapping[str, str]
) -> tuple[Normalized, dict[str, Any]]:
    """The model, filled from its checkpoint, the cache or by training, and its manifest entry
    (``source``, ``key``, ``weights``, ``cache`` hit/miss, ``trained_seconds`` when trained here).
    ``models``/``keys``: the entries prepared so far, which a compression step may start from."""
    model = build(ctx, spec)
    info: dict[str, Any] = {"arch": spec.arch, "params": dict(spec.params), "defense": spec.defense_name,
                            "compression": spec.compression}  # fmt: skip
    if spec.checkpoint is not None:
        path = ctx.checkpoint(spec)  # checked at load: a file relative to the suite, or a verified zoo file
        load_weights(model, path, spec.checkpoint_format)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        info.update(source="checkpoint", weights=str(path), key=digest[:20], weights_sha256=digest)
        if spec.zoo is not None:
            info["zoo"] = spec.zoo
        to_device(model, ctx.device).eval()
        return model, info
    defense = spec.defense.model_dump() if spec.defense is not None else None
    identity = trained_identity(ctx, spec, keys)
    key = cache_key(identity)
    with cache.lock(spec.arch, key):  # one run or worker trains a key; the others wait, then hit
        meta = cache.load(model, spec.arch, key)
        if meta is None:
            tlog = _train(ctx, spec, model, models)
            meta = {"recipe": spec.train.model_dump(), "defense": defense, "seed": ctx.seed, "arch": spec.arch,
                    "compress": identity.get("compress"), "upstream": identity.get("upstream"),
                    "params": spec.params, "train_seconds": round(tlog.seconds, 3), "epochs_run": tlog.epochs,
                    "final_train_acc": tlog.final_train_acc, "torch": torch.__version__,
                    "training": identity["training"], "pinned_env": PIN_ENV if in_pinned_child() else None}  # fmt: skip
            cache.store(model.cpu(), spec.arch, key, meta)
            info.update(cache="miss", trained_seconds=round(tlog.seconds, 3))
        elif spec.name in ctx.pinned_trained:  # trained for this run, in its pinned training process (timed there)
            info["cache"] = "miss"
        else:
            info["cache"] = "hit"
    info.update(source="cache", key=key, weights=str(cache.entry(spec.arch, key)),
                weights_sha256=meta.get("weights_sha256") or sha256_file(cache.entry(spec.arch, key) / WEIGHTS),
                train_seconds=meta.get("train_seconds"), final_train_acc=meta.get("final_train_acc"),
                training=identity["training"])  # fmt: skip
    to_device(model, ctx.device).eval()  # NHWC: faster convs, same values
    return model, info


def load_prepared(ctx: RunContext, spec: ModelSpec, info: Mapping[str, Any], cache: ModelCache) -> Normalized:
    """A model prepared earlier (by this run's driver or another worker), from its checkpoint or
    cache entry (verified against its key); never trains."""
    model = build(ctx, spec)
    if info.get("source") == "checkpoint":  # the path the driver verified
        load_weights(model, Path(info["weights"]), spec.checkpoint_format)
    elif cache.load(model, spec.arch, str(info["key"])) is None:
        raise RobustBenchError(f"model '{spec.name}': cache entry {info['key']} is missing or unusable on this "
                               "worker; the cache directory must be shared by every worker")  # fmt: skip
    to_device(model, ctx.device).eval()
    return model
