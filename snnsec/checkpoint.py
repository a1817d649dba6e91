"""Checkpoints: weights as safetensors, everything else as JSON. Nothing is ever unpickled.

A checkpoint is two files side by side::

    DIR/model.safetensors   the state_dict (tensors only; safetensors cannot hold code)
    DIR/model.json          what is needed to rebuild and judge the model:
        arch, arch_kwargs       registry name (or "package.module:function") and its kwargs
        build                   in_channels, num_classes, sensor_hw, T given to the factory
        spec                    the DataSpec the model was trained on (DataSpec.from_dict)
        T, readout              time steps and how logits are read out
        recipe                  how it was trained (loss, optimiser settings, hardening)
        attack                  the backdoor spec for poisoned models, else null
        metrics, seed, versions, command, created, weights {file, sha256}

:func:`load` accepts the directory, the ``.safetensors`` file (with the ``.json`` of the same
stem beside it) or the ``.json``. A ``.pt``/``.pth`` file (with its ``.json``) is read only
with ``torch.load(weights_only=True)``: a file that holds anything but tensors and plain
containers is refused before any of it runs.

Auditing your own model. Write a factory with the registry's signature and name it in
``arch`` as ``"package.module:function"``::

    # mypkg/nets.py
    def my_net(*, in_channels, num_classes, sensor_hw, T, width=32):
        return SpikingClassifier(...)     # or a backbone that snnsec.models wraps

    checkpoint.save("ckpt", model, arch="mypkg.nets:my_net", arch_kwargs={"width": 32}, spec=spec, recipe={})

:func:`load` then imports ``mypkg.nets`` (it must be importable, e.g. installed or on
``PYTHONPATH``) and calls ``my_net(in_channels=..., num_classes=..., sensor_hw=..., T=...,
width=32)`` through :func:`snnsec.models.build`, then loads the weights into the result.
Importing a module runs its code: only load factory checkpoints whose module you trust.
If you would rather keep the weights in a ``.pt``, save ``model.state_dict()`` with
``torch.save`` and write the ``.json`` with :func:`write_meta`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snnsec._io import atomic_write_json, atomic_write_with

FORMAT = "snnsec.checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"
PT_SUFFIXES = (".pt", ".pth")
_LIST_LIMIT = 12


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _build_args(model: nn.Module, spec) -> dict[str, Any]:
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        T, P, H, W = (int(v) for v in shape)
    else:
        T, P, H, W = spec.frame_shape
    num_classes = int(getattr(model, "num_classes", spec.num_classes))
    return {"in_channels": P, "num_classes": num_classes, "sensor_hw": [H, W], "T": T}


def make_meta(model: nn.Module, *, arch: str, arch_kwargs: dict | None, spec, recipe: dict | None,
              attack: dict | None = None, metrics: dict | None = None, seed: int | None = None) -> dict[str, Any]:
    """The metadata dict :func:`save` writes (without the weights entry)."""
    from snnsec.data.spec import DataSpec
    from snnsec.provenance import command_line, versions

    if isinstance(spec, dict):
        spec = DataSpec.from_dict(spec, source="checkpoint.save(spec=...)")
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"checkpoint.save: arch must be a registry name or 'module:function', got {arch!r}")
    build = _build_args(model, spec)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "build": build,
        "spec": spec.to_dict(),
        "T": build["T"],
        "readout": getattr(model, "readout", None),
        "recipe": dict(recipe or {}),
        "attack": attack,
        "metrics": dict(metrics or {}),
        "seed": seed,
        "versions": versions(),
        "command": command_line(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_meta(path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write checkpoint metadata (atomically)."""
    return atomic_write_json(path, meta)


def save(out_dir: str | os.PathLike, model: nn.Module, *, arch: str, arch_kwargs: dict | None, spec, recipe: dict | None,
         attack: dict | None = None, metrics: dict | None = None, seed: int | None = None) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/model.json``; returns ``out_dir``.

    ``spec`` is a :class:`~snnsec.data.spec.DataSpec` (or its dict). Both files are written
    atomically, weights first, so a ``model.json`` always describes complete weights.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    meta = make_meta(model, arch=arch, arch_kwargs=arch_kwargs, spec=spec, recipe=recipe, attack=attack,
                     metrics=metrics, seed=seed)
    # clone(): safetensors refuses tensors that share storage (tied or sliced weights).
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    weights = atomic_write_with(out / WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    meta["weights"] = {"file": WEIGHTS, "sha256": _sha256(weights)}
    write_meta(out / META, meta)
    return out


def _resolve(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights file, metadata file) for a directory, weights file or metadata file."""
    p = Path(path)
    if p.is_dir():
        meta = p / META
        for name in (WEIGHTS, *(f"model{s}" for s in PT_SUFFIXES)):
            if (p / name).is_file():
                return p / name, meta
        raise FileNotFoundError(f"{p}: no checkpoint weights in this folder (expected {WEIGHTS} or model.pt)")
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".json":
        for s in (".safetensors", *PT_SUFFIXES):
            if p.with_suffix(s).is_file():
                return p.with_suffix(s), p
        raise FileNotFoundError(f"{p}: no weights beside it (expected {p.with_suffix('.safetensors').name} or "
                                f"{p.with_suffix('.pt').name})")
    if suffix == ".safetensors" or suffix in PT_SUFFIXES:
        return p, p.with_suffix(".json")
    raise ValueError(f"{p}: not a checkpoint snnsec reads (expected a folder, .safetensors, .json, or a weights-only "
                     f".pt/.pth); pickled formats ({suffix or 'no suffix'}) are never loaded because unpickling runs code")


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check checkpoint metadata; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint metadata not found: {path} (each weights file needs its .json)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file; expected checkpoint metadata JSON") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object of checkpoint metadata, got {type(meta).__name__}")

    def need(name: str, types: tuple[type, ...], what: str, optional: bool = False):
        if name not in meta or meta[name] is None:
            if optional:
                return
            raise ValueError(f"{path}: field '{name}' is missing; expected {what}")
        if not isinstance(meta[name], types) or isinstance(meta[name], bool) and bool not in types:
            raise ValueError(f"{path}: field '{name}' must be {what}, got {meta[name]!r}")

    need("arch", (str,), "the architecture name (registry name or 'module:function')")
    need("spec", (dict,), "the DataSpec as an object")
    need("arch_kwargs", (dict,), "an object of architecture keyword arguments", optional=True)
    need("build", (dict,), "an object with in_channels, num_classes, sensor_hw, T", optional=True)
    need("recipe", (dict,), "an object describing training", optional=True)
    need("attack", (dict,), "an object describing the attack, or null", optional=True)
    need("metrics", (dict,), "an object of metric name -> number", optional=True)
    need("seed", (int,), "an integer or null", optional=True)
    from snnsec.data.spec import DataSpec

    spec = DataSpec.from_dict(meta["spec"], source=f"{path}: field 'spec'")
    build = meta.get("build") or {}
    defaults = {"in_channels": spec.polarities, "num_classes": spec.num_classes, "sensor_hw": [spec.height, spec.width],
                "T": int(meta.get("T") or spec.T)}
    build = {**defaults, **build}
    for k in ("in_channels", "num_classes", "T"):
        if not isinstance(build[k], int) or isinstance(build[k], bool) or build[k] < 1:
            raise ValueError(f"{path}: field 'build.{k}' must be a positive integer, got {build[k]!r}")
    hw = build["sensor_hw"]
    if not (isinstance(hw, (list, tuple)) and len(hw) == 2 and all(isinstance(v, int) and v > 0 for v in hw)):
        raise ValueError(f"{path}: field 'build.sensor_hw' must be [H, W] positive integers, got {hw!r}")
    return {**meta, "arch_kwargs": meta.get("arch_kwargs") or {}, "build": build}


def build_model(meta: dict[str, Any], *, source: str = "checkpoint metadata") -> nn.Module:
    """The untrained model that ``meta`` describes (via :func:`snnsec.models.build`)."""
    from snnsec import models

    b = meta["build"]
    try:
        return models.build(meta["arch"], in_channels=b["in_channels"], num_classes=b["num_classes"],
                            sensor_hw=tuple(b["sensor_hw"]), T=b["T"], **meta["arch_kwargs"])
    except (KeyError, ValueError, TypeError, ImportError, AttributeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ValueError(f"{source}: cannot build architecture {meta['arch']!r} with arch_kwargs "
                         f"{meta['arch_kwargs']}: {msg}") from exc


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors``, or from a ``.pt`` read with ``weights_only=True``."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in reason if "global" in ln.lower()), reason[0] if reason else "")
        raise ValueError(
            f"{path}: refused: this file holds pickled Python objects, not just tensors, and loading them would "
            f"run code ({detail}). Nothing in it was executed. Save the weights with snnsec.checkpoint.save "
            f"(safetensors) or torch.save(model.state_dict(), ...).") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable torch weights file: {exc}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not (isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        raise ValueError(f"{path}: expected a state_dict (names -> tensors), got {type(obj).__name__}")
    return obj


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


def check_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str, arch: str = "?") -> None:
    """Raise ValueError listing missing, unexpected and wrongly shaped entries, if any."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                    for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"missing from the file ({len(missing)}): {_names(missing)}")
    if unexpected:
        parts.append(f"not in architecture {arch!r} ({len(unexpected)}): {_names(unexpected)}")
    if shapes:
        parts.append(f"shape mismatch ({len(shapes)}): {_names(shapes)}")
    raise ValueError(f"{source}: weights do not fit architecture {arch!r} (wrong architecture or arch_kwargs?); "
                     + "; ".join(parts))


def load(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, meta)`` from a checkpoint folder, ``.safetensors``, ``.json`` or weights-only ``.pt``.

    The model is rebuilt from ``meta`` (registry name or user factory, see the module doc),
    the weights are checked against it (every missing, unexpected or mis-shaped name is
    listed in the error) and loaded, and the model is returned in eval mode.
    ``meta["spec"]`` is a dict for :meth:`DataSpec.from_dict`.
    """
    weights, meta_path = _resolve(path)
    meta = read_meta(meta_path)
    recorded = (meta.get("weights") or {}).get("sha256") if isinstance(meta.get("weights"), dict) else None
    if recorded and weights.suffix == ".safetensors" and _sha256(weights) != recorded:
        raise ValueError(f"{weights}: contents differ from the sha256 recorded in {meta_path} (field 'weights.sha256'): "
                         f"the weights were replaced after the metadata was written")
    state = read_weights(weights)
    model = build_model(meta, source=str(meta_path))
    check_state(model, state, source=str(weights), arch=meta["arch"])
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta
