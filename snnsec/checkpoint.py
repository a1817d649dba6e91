"""Checkpoints: weights as safetensors, everything else as JSON. Nothing is ever unpickled.

A checkpoint is two files side by side::

    DIR/model.safetensors   the state_dict (tensors only; safetensors cannot hold code)
    DIR/model.json          what is needed to rebuild and judge the model:
        arch, arch_kwargs       registry name (or "package.module:function") and its kwargs
        build                   in_channels, num_classes, sensor_hw, T given to the factory
        spec                    the DataSpec the model was trained on (DataSpec.from_dict)
        T, readout              time steps and how logits are read out
        membrane_bits           the neurons' membrane precision (snnsec.compress), else null
        recipe                  how it was trained (loss, optimiser settings, hardening)
        attack                  the backdoor spec for poisoned models, else null
        metrics, seed, versions, command, created, weights {file, sha256}

:func:`load` accepts the directory, the ``.safetensors`` file (with the ``.json`` of the same
stem beside it) or the ``.json``. A ``.pt``/``.pth`` file (with its ``.json``) is read only
with ``torch.load(weights_only=True)``: a file that holds anything but tensors and plain
containers is refused before any of it runs.

Trust. A checkpoint is untrusted input: nothing in its files causes an import or runs code.
Its ``arch`` builds when it is a registered name (:func:`snnsec.models.register`). An ``arch``
of the form ``"package.module:function"`` builds only when you name that same factory yourself:
``load(path, arch="package.module:function")`` (or the factory object), ``--arch
package.module:function`` on the CLI, or by registering the factory under any name in Python
before loading. Otherwise :class:`UntrustedArchitecture` says what the file asks to import
and how to allow it. ``arch_kwargs`` must be parameters of the factory, and the weight shapes
are compared with a skeleton of the model built on PyTorch's ``meta`` device (no memory)
before the real model is allocated. Only regular files are read (a FIFO or ``/dev/zero`` is
refused before it is opened).

Auditing your own model. Write a factory that takes any of ``in_channels, num_classes,
sensor_hw, T`` plus its own keyword arguments, and save with ``arch`` naming it::

    # mypkg/nets.py
    def my_net(in_channels=2, num_classes=10, width=32):
        return MyBackbone(...)     # or a SpikingClassifier

    checkpoint.save("ckpt", model, arch="mypkg.nets:my_net", arch_kwargs={"width": 32}, spec=spec, recipe={})
    checkpoint.load("ckpt", arch="mypkg.nets:my_net")           # you name the factory: allowed
    $ snnsec audit ckpt --arch mypkg.nets:my_net --out audit/

Framing is part of the contract: ``spec.slicing`` and ``spec.binary`` say how the model was
fed (see :class:`snnsec.data.spec.DataSpec`: tonic's event-count or time bins, bins from
t = 0, or spikingjelly's ``split_by='number'``; binary or counts), and the audit and attacks
frame their data exactly that way. If you would rather keep the weights in a ``.pt``, save
``model.state_dict()`` with ``torch.save`` and write the ``.json`` with :func:`write_meta`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import stat
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from snnsec._io import atomic_write_json, atomic_write_with

FORMAT = "snnsec.checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"
PT_SUFFIXES = (".pt", ".pth")
_LIST_LIMIT = 12
# Metadata is a few kB; a larger file is not checkpoint metadata, and reading it whole would let
# a file under audit take the machine's memory.
META_MAX_BYTES = 16 << 20


class UntrustedArchitecture(ValueError):
    """A checkpoint names code to import that the caller has not allowed."""


def regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file (symlinks followed); a FIFO, device or folder is refused
    before it is opened, so it can neither block the audit nor feed it endless bytes."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode) else
                "a block device" if stat.S_ISBLK(mode) else "a folder" if stat.S_ISDIR(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ValueError(f"{path}: {what} must be a regular file, but this is {kind}; copy the file itself here")
    return path


def _sha256(path: Path) -> str:
    regular_file(path, "checkpoint weights")
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
        "membrane_bits": getattr(model, "membrane_bits", None),
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
            if (p / name).exists():
                return regular_file(p / name, "checkpoint weights"), meta
        raise FileNotFoundError(f"{p}: no checkpoint weights in this folder (expected {WEIGHTS} or model.pt)")
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".json":
        for s in (".safetensors", *PT_SUFFIXES):
            if p.with_suffix(s).exists():
                return regular_file(p.with_suffix(s), "checkpoint weights"), p
        raise FileNotFoundError(f"{p}: no weights beside it (expected {p.with_suffix('.safetensors').name} or "
                                f"{p.with_suffix('.pt').name})")
    if suffix == ".safetensors" or suffix in PT_SUFFIXES:
        return regular_file(p, "checkpoint weights"), p.with_suffix(".json")
    raise ValueError(f"{p}: not a checkpoint snnsec reads (expected a folder, .safetensors, .json, or a weights-only "
                     f".pt/.pth); pickled formats ({suffix or 'no suffix'}) are never loaded because unpickling runs code")


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check checkpoint metadata; errors name the file and the field."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint metadata not found: {path} (each weights file needs its .json)")
    regular_file(path, "checkpoint metadata")
    if path.stat().st_size > META_MAX_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes is not checkpoint metadata (at most {META_MAX_BYTES}); "
                         "expected the model.json written by snnsec.checkpoint.save")
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
    need("membrane_bits", (int,), "the neurons' membrane bits (an integer in [2, 16]) or null", optional=True)
    if meta.get("membrane_bits") is not None and not 2 <= meta["membrane_bits"] <= 16:
        raise ValueError(f"{path}: field 'membrane_bits' must be an integer in [2, 16] or null, got {meta['membrane_bits']!r}")
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
    # the model is fed frames framed by 'spec': a model built for other frames would fail deep
    # inside a layer, or (T) silently reshape time into the batch
    for field, want in (("T", spec.T), ("in_channels", spec.polarities), ("sensor_hw", [spec.height, spec.width]),
                        ("num_classes", spec.num_classes or build["num_classes"])):
        got = list(build[field]) if field == "sensor_hw" else build[field]
        if got != want:
            source = {"T": "T", "in_channels": "sensor_size[2]", "sensor_hw": "sensor_size[1], sensor_size[0]",
                      "num_classes": "classes"}[field]
            raise ValueError(f"{path}: field 'build.{field}' is {got!r} but the data spec (field 'spec.{source}') "
                             f"gives {want!r}; a model must be built for the frames it is fed")
    return {**meta, "arch_kwargs": meta.get("arch_kwargs") or {}, "build": build}


def trusted_factory(file_arch: str, allowed: str | Callable | None = None, *, source: str = "checkpoint metadata"):
    """The factory (or registered name) to build ``file_arch`` with, importing nothing the
    caller did not name: see the module doc. ``allowed`` is what the caller named (``--arch``)."""
    from snnsec import models

    def mismatch(named: str):
        return ValueError(f"{source}: field 'arch' is {file_arch!r}, but you named {named!r} (--arch); "
                          f"the weights were saved for {file_arch!r}. Name that factory, or drop --arch.")

    allowed_id = None if allowed is None else (allowed if isinstance(allowed, str) else models.factory_id(allowed))
    if file_arch in models.names():
        if allowed_id is not None and allowed_id not in (file_arch, models.factory_id(models.resolve(file_arch))):
            raise mismatch(allowed_id)
        return file_arch
    if ":" not in file_arch:
        raise ValueError(f"{source}: field 'arch': unknown model {file_arch!r}; registered: {', '.join(models.names())}. "
                         f"If it is your own factory, register it (snnsec.models.register) before loading.")
    if allowed_id is not None:
        if allowed_id != file_arch:
            raise mismatch(allowed_id)
        return allowed if callable(allowed) else models.resolve(allowed)  # the caller named it: they trust it
    registered = models.registered_as(file_arch)
    if registered is not None:
        return registered
    raise UntrustedArchitecture(
        f"{source}: field 'arch' asks to import and call {file_arch!r}. snnsec never imports code named by a "
        f"checkpoint: the file could name any function (torch.hub:load runs a hubconf.py shipped beside the "
        f"weights). Nothing was imported. If you trust that factory, name it yourself: "
        f"`--arch {file_arch}` on the command line, checkpoint.load(path, arch={file_arch!r}) in Python, or "
        f"snnsec.models.register(name, factory, ...) before loading.")


def build_model(meta: dict[str, Any], *, source: str = "checkpoint metadata", arch: str | Callable | None = None,
                state: dict[str, torch.Tensor] | None = None, state_source: str = "weights") -> nn.Module:
    """The untrained model that ``meta`` describes (via :func:`snnsec.models.build`).

    ``arch`` is the factory the caller allows (see :func:`trusted_factory`). With ``state``, the
    weight names and shapes are checked on a ``meta``-device skeleton before the real model is
    allocated, so a file asking for ``hidden=10**8`` fails without taking 800 GB.
    """
    from snnsec import models

    factory = trusted_factory(meta["arch"], arch, source=source)
    b = meta["build"]
    where = f"{source}: field 'arch_kwargs'"

    def make():
        try:
            return models.build(factory, in_channels=b["in_channels"], num_classes=b["num_classes"],
                                sensor_hw=tuple(b["sensor_hw"]), T=b["T"], **meta["arch_kwargs"])
        except (KeyError, ValueError, TypeError, ImportError, AttributeError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise ValueError(f"{where}: cannot build architecture {meta['arch']!r} with arch_kwargs "
                             f"{meta['arch_kwargs']}: {msg}") from exc

    # arch_kwargs against the factory's signature before it runs (a kwarg named like a build argument
    # would otherwise be a Python call error inside models.build)
    models.factory_arguments(models.resolve(factory) if isinstance(factory, str) else factory,
                             {**b, "sensor_hw": tuple(b["sensor_hw"])}, meta["arch_kwargs"], where=where)
    if state is not None:
        # Bad arch_kwargs fail again in make() below, against the signature before the factory runs;
        # a factory that cannot run on 'meta' (snntorch's .item()) has its shapes checked after the build.
        try:
            with torch.device("meta"):
                skeleton = make()
        except Exception:  # noqa: BLE001
            skeleton = None
        if skeleton is not None:
            check_state(skeleton, state, source=f"{state_source} (arch_kwargs from {source})", arch=meta["arch"])
    model = make()
    if meta.get("membrane_bits"):
        from snnsec.compress import quantize_membranes

        try:
            quantize_membranes(model, meta["membrane_bits"])
        except ValueError as exc:
            raise ValueError(f"{source}: field 'membrane_bits': {exc}") from None
    model.arch = meta["arch"]
    return model


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors``, or from a ``.pt`` read with ``weights_only=True``."""
    path = regular_file(Path(path), "checkpoint weights")
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


def load(path: str | os.PathLike, *, arch: str | Callable | None = None,
         device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """``(model, meta)`` from a checkpoint folder, ``.safetensors``, ``.json`` or weights-only ``.pt``.

    The model is rebuilt from ``meta`` (a registered name, or the ``"module:function"`` factory
    that ``arch`` allows; see the module doc),
    the weights are checked against it (every missing, unexpected or mis-shaped name is
    listed in the error) and loaded, and the model is returned in eval mode on ``device``.
    ``meta["spec"]`` is a dict for :meth:`DataSpec.from_dict`.
    """
    weights, meta_path = _resolve(path)
    meta = read_meta(meta_path)
    recorded = (meta.get("weights") or {}).get("sha256") if isinstance(meta.get("weights"), dict) else None
    if recorded and weights.suffix == ".safetensors" and _sha256(weights) != recorded:
        raise ValueError(f"{weights}: contents differ from the sha256 recorded in {meta_path} (field 'weights.sha256'): "
                         f"the weights were replaced after the metadata was written")
    trusted_factory(meta["arch"], arch, source=str(meta_path))  # refuse before reading any weights
    state = read_weights(weights)
    model = build_model(meta, source=str(meta_path), arch=arch, state=state, state_source=str(weights))
    check_state(model, state, source=str(weights), arch=meta["arch"])
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return model, meta


def matching_dataset(meta: dict[str, Any], *, data: str | None = None, root=None, split: str = "test",
                     T: int | None = None, data_opts: dict | None = None, source: str = "checkpoint"):
    """``(dataset, spec)``: a split of ``data`` (default the checkpoint's dataset) framed as the
    checkpoint's DataSpec (T unless given, slicing, binarisation), refused unless its frames
    ``(P, H, W)`` and classes are what the model takes."""
    from snnsec.data import load
    from snnsec.data.spec import DataSpec

    ck = DataSpec.from_dict(meta["spec"], source=f"{source}: field 'spec'")
    name = data or ck.name
    kw = {"T": int(T) if T is not None else ck.T, "slicing": ck.slicing, "binary": ck.binary, **(data_opts or {})}
    ds, spec = load(name, split=split, root=root, **kw)
    if tuple(spec.frame_shape[1:]) != tuple(ck.frame_shape[1:]) or spec.num_classes != ck.num_classes:
        raise ValueError(f"{source}: the model takes frames {tuple(ck.frame_shape[1:])} (P, H, W) with "
                         f"{ck.num_classes} classes, but {name} gives {tuple(spec.frame_shape[1:])} with "
                         f"{spec.num_classes}; pass data of the kind it was trained on (--data/--root)")
    return ds, spec
