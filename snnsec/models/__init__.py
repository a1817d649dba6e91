"""Model registry: architectures by name, each built as a :class:`snnsec.harness.SpikingClassifier`.

    >>> from snnsec import models
    >>> model = models.build("csnn", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=16)
    >>> models.names()          # registered names
    >>> models.describe()       # [(name, one-line description), ...]

Auditing your own architecture
------------------------------
Write a factory with this signature (keyword-only, extra keyword arguments allowed)::

    from snnsec.harness import SpikingClassifier

    def my_factory(*, in_channels: int, num_classes: int, sensor_hw: tuple[int, int], T: int, **kwargs):
        ...
        return SpikingClassifier(backbone, T=T, in_channels=in_channels, num_classes=num_classes,
                                 sensor_hw=sensor_hw, kind="multi-step")   # or just `backbone`

It returns a :class:`~snnsec.harness.SpikingClassifier`, or a bare ``nn.Module`` which is then
wrapped as a multi-step backbone (time-first ``[T, B, P, H, W]`` in, ``[T, B, K]`` or ``[B, K]`` out,
state reset by ``functional.reset_net`` / a ``reset()`` method). Then either register it::

    models.register("my-net", my_factory, "what it is")
    models.build("my-net", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=16)

or give ``"package.module:function"`` wherever an architecture name is accepted (``build``, the
CLI's ``--model``, checkpoints' ``arch``): the module is imported and the function called the same
way. Checkpoints store the arch string and kwargs, so a user model round-trips as long as the
module is importable.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from snnsec.harness import SpikingClassifier

__all__ = ["build", "describe", "names", "register", "resolve"]


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, factory: Callable[..., nn.Module], description: str, *, replace: bool = False) -> None:
    """Register ``factory`` under ``name`` (see the module docstring for the factory signature)."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"model name must be a non-empty string without ':', got {name!r}")
    if not callable(factory):
        raise ValueError(f"register({name!r}): factory must be callable, got {factory!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"model {name!r} is already registered (pass replace=True to override)")
    _REGISTRY[name] = _Entry(factory, description)


def names() -> list[str]:
    """Registered architecture names, in registration order."""
    return list(_REGISTRY)


def describe() -> list[tuple[str, str]]:
    """``[(name, description), ...]`` for every registered architecture."""
    return [(n, e.description) for n, e in _REGISTRY.items()]


def resolve(arch: str) -> Callable[..., nn.Module]:
    """The factory for a registered name or a ``"package.module:function"`` string."""
    if not isinstance(arch, str):
        raise ValueError(f"architecture must be a name or 'package.module:function', got {arch!r}")
    if arch in _REGISTRY:
        return _REGISTRY[arch].factory
    if ":" not in arch:
        raise ValueError(f"unknown model {arch!r}; registered: {', '.join(names())}; or give 'package.module:function'")
    mod_name, _, fn_name = arch.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"model factory {arch!r}: cannot import module {mod_name!r} ({exc})") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ValueError(f"model factory {arch!r}: module {mod_name!r} has no callable {fn_name!r}")
    return fn


def build(arch: str, *, in_channels: int, num_classes: int, sensor_hw: tuple[int, int], T: int, **kwargs) -> SpikingClassifier:
    """Build architecture ``arch`` for input ``[B, T, in_channels, *sensor_hw]`` and ``num_classes`` outputs.

    ``kwargs`` go to the factory (widths, neuron options, ``readout``, ...). The result records
    ``arch`` and ``arch_kwargs`` so checkpoints can rebuild it.
    """
    factory = resolve(arch)
    sensor_hw = (int(sensor_hw[0]), int(sensor_hw[1]))
    model = factory(in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw, T=T, **kwargs)
    if not isinstance(model, SpikingClassifier):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model factory for {arch!r} returned {type(model).__name__}, expected an nn.Module")
        model = SpikingClassifier(model, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw)
    model.arch = arch
    model.arch_kwargs = dict(kwargs)
    return model


def _lazy(module: str, fn: str) -> Callable[..., nn.Module]:
    # importing every family up front would pull in the whole spikingjelly zoo for `snnsec models`
    def factory(**kwargs):
        return getattr(importlib.import_module(f"{__name__}.{module}"), fn)(**kwargs)

    factory.__name__ = fn
    return factory


register("csnn", _lazy("csnn", "csnn"),
         "2 conv-BN-LIF blocks + FC-BN-LIF hidden + linear readout (ATan, detach_reset; the fast CPU default)")
register("psn-csnn", _lazy("csnn", "psn_csnn"),
         "csnn with SlidingPSN parallel neurons (neuron_type='psn' for the full PSN, which needs exactly T steps)")
register("spikformer", _lazy("zoo", "spikformer"),
         "spikingjelly Spikformer, 64-d, 1 block, patch 4 (16 above 64 px); [T,B,K] output averaged over T")
register("qkformer", _lazy("zoo", "qkformer"), "spikingjelly QKFormer, 64-d, depths (1,1,1)")
register("sdt", _lazy("zoo", "sdt"), "spikingjelly Spike-driven Transformer, 64-d, 1 block")
register("ms-resnet", _lazy("zoo", "ms_resnet"),
         "spikingjelly MS-ResNet (1,1,1) x 16 ch; Rect surrogate (sparse input gradients: compare with override_surrogate)")
register("maxformer", _lazy("zoo", "maxformer"), "spikingjelly MaxFormer, 64-d, depths (1,1,1)")
register("plain-lif", _lazy("plain", "plain_lif"),
         "plain-torch conv LIF net, no SNN framework, own ATan surrogate autograd function")
if importlib.util.find_spec("snntorch") is not None:
    register("snntorch-csnn", _lazy("snntorch_csnn", "snntorch_csnn"),
             "snntorch Leaky conv net (own time loop, spike/membrane records; readout mean|membrane|spike-count)")
