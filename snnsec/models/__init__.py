"""Model registry: architectures by name, each built as a :class:`snnsec.harness.SpikingClassifier`.

    >>> from snnsec import models
    >>> model = models.build("csnn", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=16)
    >>> models.names()          # registered names
    >>> models.describe()       # [(name, one-line description), ...]

Auditing your own architecture
------------------------------
Write a factory that takes any of ``in_channels, num_classes, sensor_hw, T`` (the harness passes
the ones its signature names) and your own keyword arguments::

    from snnsec.harness import SpikingClassifier

    def my_factory(in_channels=2, num_classes=10, width=32):
        ...
        return backbone     # or a SpikingClassifier

It returns a :class:`~snnsec.harness.SpikingClassifier`, or a bare ``nn.Module`` which is then
wrapped as a multi-step backbone (time-first ``[T, B, P, H, W]`` in, ``[T, B, K]`` or ``[B, K]`` out,
state reset by ``functional.reset_net`` / a ``reset()`` method). Then either register it::

    models.register("my-net", my_factory, "what it is")
    models.build("my-net", in_channels=2, num_classes=10, sensor_hw=(34, 34), T=16)

or give ``"package.module:function"`` where *you* name an architecture (``build``, the CLI's
``--model``): the module is imported and the function called the same way. A checkpoint that
names ``"package.module:function"`` in its ``arch`` is never imported on its say-so; see
:mod:`snnsec.checkpoint` for how to allow it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from snnsec.harness import SpikingClassifier

__all__ = ["BUILD_ARGS", "build", "describe", "factory_id", "names", "register", "registered_as", "resolve"]

# What the harness knows about the input; a factory receives the ones its signature names.
BUILD_ARGS = ("in_channels", "num_classes", "sensor_hw", "T")


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


def factory_id(factory: Callable) -> str:
    """``"package.module:function"`` naming ``factory`` (what a checkpoint's ``arch`` holds)."""
    target = getattr(factory, "target_id", None)
    if target:
        return target
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', getattr(factory, '__name__', '?'))}"


def registered_as(arch_id: str) -> str | None:
    """The registered name whose factory is ``arch_id`` (``"module:function"``), if any: a
    factory the user registered has been imported by the user, so naming it imports nothing."""
    for name, entry in _REGISTRY.items():
        if factory_id(entry.factory) == arch_id:
            return name
    return None


def resolve(arch: str) -> Callable[..., nn.Module]:
    """The factory for a registered name or a ``"package.module:function"`` string.

    A ``module:function`` string is imported: pass only what the user typed or named (``--model``,
    ``--arch``, a bench spec), never a string read from a checkpoint; checkpoints go through
    :func:`snnsec.checkpoint.trusted_factory`."""
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


def factory_arguments(factory: Callable, given: dict[str, Any], kwargs: dict[str, Any], *,
                      where: str = "factory") -> dict[str, Any]:
    """The keyword arguments to call ``factory`` with: the build arguments its signature names
    (all of them when it takes ``**kwargs``) and ``kwargs``, each checked against the signature
    before anything is built. A factory may take any subset of :data:`BUILD_ARGS`."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {**given, **kwargs}  # a builtin without a signature: nothing to check against
    params = sig.parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {n for n, p in params.items() if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    clash = sorted(set(kwargs) & set(BUILD_ARGS))
    if clash:
        raise ValueError(f"{where}: arch_kwargs {clash} are set from the data, not by hand; remove them")
    unknown = sorted(set(kwargs) - named) if not var_kw else []
    if unknown:
        raise ValueError(f"{where}: arch_kwargs {unknown} are not parameters of {factory_id(factory)}; "
                         f"it takes {sorted(named - set(BUILD_ARGS)) or 'no keyword arguments'}")
    for k, v in kwargs.items():
        if k in params:
            _check_like_default(k, v, params[k].default, where)
    args = {k: v for k, v in given.items() if var_kw or k in named}
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    missing = sorted(set(required) - set(args) - set(kwargs))
    if missing:
        raise ValueError(f"{where}: {factory_id(factory)} requires {missing}, which snnsec cannot supply "
                         f"(it passes {list(BUILD_ARGS)} and arch_kwargs); give them defaults or arch_kwargs")
    return {**args, **kwargs}


def _check_like_default(name: str, value: Any, default: Any, where: str) -> None:
    """A keyword whose default is a plain number, flag, string or sequence must be one too:
    ``hidden="abc"`` fails here, naming the keyword, not deep inside a layer constructor."""
    if default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, (tuple, list)):
        ok, kind = isinstance(value, (tuple, list)), "a list"
    else:
        return
    if not ok:
        raise ValueError(f"{where}: arch_kwargs {name}={value!r} is {type(value).__name__}, expected {kind} "
                         f"(its default is {default!r})")


def build(arch: str | Callable[..., nn.Module], *, in_channels: int, num_classes: int, sensor_hw: tuple[int, int], T: int, **kwargs) -> SpikingClassifier:
    """Build architecture ``arch`` (a registered name, ``"package.module:function"`` or the factory
    itself) for input ``[B, T, in_channels, *sensor_hw]`` and ``num_classes`` outputs.

    ``kwargs`` go to the factory (widths, neuron options, ``readout``, ...) and must be among
    its parameters. The result records ``arch`` and ``arch_kwargs`` so checkpoints can rebuild it.
    """
    factory = resolve(arch) if isinstance(arch, str) else arch
    name = arch if isinstance(arch, str) else factory_id(arch)
    sensor_hw = (int(sensor_hw[0]), int(sensor_hw[1]))
    given = {"in_channels": in_channels, "num_classes": num_classes, "sensor_hw": sensor_hw, "T": T}
    model = factory(**factory_arguments(factory, given, kwargs, where=f"architecture {name!r}"))
    arch = name
    if not isinstance(model, SpikingClassifier):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model factory for {arch!r} returned {type(model).__name__}, expected an nn.Module")
        model = SpikingClassifier(model, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw)
    model.arch = arch
    model.arch_kwargs = dict(kwargs)
    return model


class _Lazy:
    """A factory of ours imported on first use: importing every family up front would pull in the
    whole spikingjelly zoo for `snnsec models`. Its signature is the real factory's."""

    def __init__(self, module: str, fn: str) -> None:
        self.module, self.__name__ = f"{__name__}.{module}", fn
        self.target_id = f"{self.module}:{fn}"

    @property
    def target(self) -> Callable[..., nn.Module]:
        return getattr(importlib.import_module(self.module), self.__name__)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.target)

    def __call__(self, **kwargs) -> nn.Module:
        return self.target(**kwargs)


def _lazy(module: str, fn: str) -> Callable[..., nn.Module]:
    return _Lazy(module, fn)


register("csnn", _lazy("csnn", "csnn"),
         "2 conv-BN-LIF blocks + FC-BN-LIF hidden + linear readout (ATan, detach_reset; the fast CPU default)")
register("psn-csnn", _lazy("csnn", "psn_csnn"),
         "csnn with SlidingPSN parallel neurons (neuron_type='psn' for the full PSN, which needs exactly T steps)")
register("spikformer", _lazy("zoo", "spikformer"),
         "spikingjelly Spikformer, 64-d, 1 block, patch 4 (16 above 64 px), CML downsampling as spikingjelly's "
         "(cml=False: the original's); [T,B,K] output averaged over T")
register("qkformer", _lazy("zoo", "qkformer"), "spikingjelly QKFormer, 64-d, depths (1,1,1)")
register("sdt", _lazy("zoo", "sdt"), "spikingjelly Spike-driven Transformer, 64-d, 1 block")
register("ms-resnet", _lazy("zoo", "ms_resnet"),
         "spikingjelly MS-ResNet (1,1,1) x 16 ch; Rect surrogate (sparse input gradients: compare with override_surrogate)")
register("maxformer", _lazy("zoo", "maxformer"), "spikingjelly MaxFormer, 64-d, depths (1,1,1)")
register("spikingformer", _lazy("spikingformer", "spikingformer"),
         "Spikingformer (spike-driven residuals: LIF -> Conv -> BN everywhere), 64-d, 1 block; config='paper': 256-d, 2; "
         "cml=True: CML downsampling")
register("snn-vit", _lazy("snn_vit", "snn_vit"),
         "SNN-ViT with saccadic spatio-temporal attention (SSSA, linear form) and GL-SPS, 64-d, 1 block; exactly T steps")
register("sew-resnet", _lazy("sew_resnet", "sew_resnet"),
         "SEW-ResNet without torchvision, ADD connect, (1,1,1) x 16/32/64 ch; config='sew18': SEW-ResNet-18 layout")
register("plain-lif", _lazy("plain", "plain_lif"),
         "plain-torch conv LIF net, no SNN framework, own ATan surrogate autograd function")
if importlib.util.find_spec("snntorch") is not None:
    register("snntorch-csnn", _lazy("snntorch_csnn", "snntorch_csnn"),
             "snntorch Leaky conv net (own time loop, spike/membrane records; readout mean|membrane|spike-count)")
