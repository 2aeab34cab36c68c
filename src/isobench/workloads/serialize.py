"""Workloads as plain data: to and from dicts (JSON, TOML), validated field by field.

Loading never executes anything: a workload file is declarative data. Every error names the field
(``optimizer.learning_rate``, ``layers[3].units``) and, where there is a fixed set, the allowed values.
"""
from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Union

from ..errors import UserError
from .spec import (LAYER_TYPES, OPTIMIZER_KINDS, PRIVATE_BASES, DataSpec, OptimizerSpec, ParitySpec, Residual,
                   ScheduleSpec, ShapeError, Workload, walk_shapes)

CHOICES = {
    "data.source": ("digits", "mnist", "fashion-mnist", "cifar10", "synthetic-images", "synthetic-tokens",
                    "synthetic-token-classes"),
    "data.dir_source": ("mnist", "fashion-mnist", "cifar10"),
    "optimizer.kind": OPTIMIZER_KINDS,
    "optimizer.base": PRIVATE_BASES,
    "optimizer.sampling": ("poisson", "shuffle"),
    "schedule.kind": ("constant", "step", "cosine"),
    "loss": ("softmax_cross_entropy",),
    "metric": ("accuracy", "loss"),
    "init": ("glorot_uniform",),
}
PARAM_LAYERS = {"dense", "conv2d", "batchnorm", "layernorm", "embedding", "positional_embedding", "lstm",
                "attention"}


def _plain(value):
    if dataclasses.is_dataclass(value):
        out = {"kind": value.kind} if hasattr(type(value), "kind") and type(value) in LAYER_TYPES.values() else {}
        out.update({f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return out
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def workload_to_dict(workload: Workload) -> dict[str, Any]:
    """JSON/TOML-ready dict; layers carry their ``kind``."""
    return _plain(workload)


def _check(value, hint, field: str):
    """``value`` converted to the annotated type, or a UserError naming ``field``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, field)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if len(errors) == 1 else f"{field}: expected {_name(hint)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{field}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{field}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"{field}: expected {len(args)} values, got {len(value)}")
        return tuple(_check(v, a, f"{field}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{field}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{field}: expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{field}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{field}: expected a string, got {value!r}")
        if field in CHOICES and value not in CHOICES[field]:
            raise UserError(f"{field}: {value!r} is not one of: {', '.join(CHOICES[field])}")
        return value
    raise UserError(f"{field}: unsupported type")


def _name(hint) -> str:
    return " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(hint) if a is not type(None))


def _build(cls, raw, field: str, skip=()):
    if not isinstance(raw, dict):
        raise UserError(f"{field}: expected a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names - {"kind"} - set(skip))
    if unknown:
        raise UserError(f"{field}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in skip:
                raise UserError(f"{field}: missing required field {f.name!r}")
            continue
        kwargs[f.name] = _check(raw[f.name], hints[f.name], f"{field}.{f.name}".lstrip("."))
    return kwargs


def _layers(raw, field: str, counter: dict) -> tuple:
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{field}: expected a non-empty list of layers")
    out = []
    for i, item in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(item, dict) or "kind" not in item:
            raise UserError(f"{where}: each layer needs a 'kind'; one of: {', '.join(LAYER_TYPES)}")
        kind = item["kind"]
        if kind not in LAYER_TYPES:
            raise UserError(f"{where}.kind: unknown layer {kind!r}; one of: {', '.join(LAYER_TYPES)}")
        if kind == "residual":
            unknown = sorted(set(item) - {"kind", "block", "shortcut"})
            if unknown:
                raise UserError(f"{where}: unknown field {unknown[0]!r}; allowed: block, shortcut")
            out.append(Residual(_layers(item.get("block"), f"{where}.block", counter),
                                _layers(item["shortcut"], f"{where}.shortcut", counter) if item.get("shortcut")
                                else ()))
            continue
        item = dict(item)
        if kind in PARAM_LAYERS and "name" not in item:  # unique default names: dense_0, dense_1, ...
            counter[kind] = counter.get(kind, -1) + 1
            item["name"] = f"{kind}_{counter[kind]}"
        out.append(LAYER_TYPES[kind](**_build(LAYER_TYPES[kind], item, where)))
    return tuple(out)


def workload_from_dict(raw: dict[str, Any], origin: str = "workload") -> Workload:
    """Validate and build a :class:`Workload`; shapes are checked through every layer."""
    if not isinstance(raw, dict):
        raise UserError(f"{origin}: expected a table of workload fields")
    try:
        kwargs = _build(Workload, raw, "", skip=("layers", "data", "optimizer", "schedule", "parity"))
        kwargs["layers"] = _layers(raw.get("layers"), "layers", {})
        for key, cls in (("data", DataSpec), ("optimizer", OptimizerSpec), ("schedule", ScheduleSpec),
                         ("parity", ParitySpec)):
            if key in raw:
                kwargs[key] = cls(**_build(cls, raw[key], key))
        w = Workload(**kwargs)
        _semantics(w)
    except UserError as e:
        raise UserError(f"{origin}: {e}") from None
    return w


def _semantics(w: Workload) -> None:
    """Checks beyond types: positive sizes, names unique, shapes compatible, outputs match the classes."""
    for field in ("batch_size", "epochs", "num_classes"):
        if getattr(w, field) < 1:
            raise UserError(f"{field}: must be at least 1, got {getattr(w, field)}")
    if not 0 < w.optimizer.learning_rate < 10:
        raise UserError(f"optimizer.learning_rate: must be in (0, 10), got {w.optimizer.learning_rate}")
    _private(w.optimizer)
    if not 0 < w.data.test_fraction < 1:
        raise UserError(f"data.test_fraction: must be between 0 and 1, got {w.data.test_fraction}")
    if any(d < 1 for d in w.input_shape):
        raise UserError(f"input_shape: every size must be at least 1, got {list(w.input_shape)}")
    try:
        out, _ = walk_shapes(w.layers, w.input_shape)
    except ShapeError as e:
        raise UserError(str(e)) from None
    if out[-1] != w.num_classes:
        raise UserError(f"layers: the model ends with {out[-1]} outputs but num_classes is {w.num_classes}")
    seen = list(_named(w.layers))
    dupes = {n for n in seen if seen.count(n) > 1}
    if dupes:
        raise UserError(f"layers: layer name {sorted(dupes)[0]!r} is used twice; names must be unique")


DP_FIELDS = ("clip", "noise_multiplier", "sampling_rate", "delta", "target_epsilon")


def _private(o) -> None:
    """DP-SGD's fields: in range, and only with ``kind = "dp-sgd"``."""
    if not o.private:
        stray = [f for f in DP_FIELDS if getattr(o, f) not in (None, 0.0)]
        if stray:
            raise UserError(f"optimizer.{stray[0]}: applies only with optimizer.kind = \"dp-sgd\"")
        return
    if o.clip is None or not o.clip > 0:
        raise UserError(f"optimizer.clip: dp-sgd needs a per-example norm bound above 0, got {o.clip}")
    if o.noise_multiplier < 0:
        raise UserError(f"optimizer.noise_multiplier: must be 0 or more, got {o.noise_multiplier}")
    if o.noise_multiplier == 0 and o.target_epsilon is not None:
        raise UserError(f"optimizer.noise_multiplier: 0 adds no noise, so no epsilon is guaranteed, but "
                        f"optimizer.target_epsilon asks for {o.target_epsilon:g}; give a noise multiplier above 0")
    if o.sampling_rate is not None and not 0 < o.sampling_rate <= 1:
        raise UserError(f"optimizer.sampling_rate: a probability per step in (0, 1], got {o.sampling_rate}")
    if o.sampling_rate is not None and o.sampling == "shuffle":
        raise UserError("optimizer.sampling_rate: applies to sampling = \"poisson\"; shuffled batches are "
                        "batch_size examples each")
    if o.delta is not None and not 0 < o.delta < 1:
        raise UserError(f"optimizer.delta: must be in (0, 1), got {o.delta}")
    if o.target_epsilon is not None and not o.target_epsilon > 0:
        raise UserError(f"optimizer.target_epsilon: must be above 0, got {o.target_epsilon}")
    if o.clip_norm is not None:
        raise UserError("optimizer.clip_norm: dp-sgd clips every example's gradient to optimizer.clip; drop "
                        "clip_norm")


def _named(layers):
    for layer in layers:
        if isinstance(layer, Residual):
            yield from _named(layer.block)
            yield from _named(layer.shortcut)
        elif getattr(layer, "name", None) is not None:
            yield layer.name


def load_toml(path: str | Path) -> Workload:
    """A workload from a TOML file, validated before any worker starts."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read workload file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    raw.setdefault("name", path.stem)
    raw.setdefault("description", f"user workload from {path.name}")
    return workload_from_dict(raw, str(path))
