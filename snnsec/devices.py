"""Where a command computes: the torch device of its model, and which kernels spikingjelly's
multi-step neurons use on CUDA. Both are decided once, at the entry point, like the thread
budget (:mod:`snnsec.threads`).

The device travels explicitly: every run function that builds or loads a model takes
``device=`` and puts the model there; the data stay on the CPU and each batch moves to the
model's device (:func:`snnsec.harness.device_of`), so the algorithms never name a device.

spikingjelly 2.0 picks each neuron operator's CUDA implementation (its compiled CUDA
extension, Triton, or plain torch) when the operator's module is imported, from one
environment variable per operator (``SJ_LIF_CUDA_IMPLEMENTATION`` and so on, default
``auto``: the fastest that loads). ``--backend`` sets all of them, so it must run before
spikingjelly is imported; on the CPU the variables change nothing (the CPU kernels are
used). The old ``cupy`` backend of spikingjelly 0.0.0.0.x does not exist in 2.0.
"""

from __future__ import annotations

import os
import re
import sys

BACKENDS = ("auto", "cuda", "triton", "torch")
# spikingjelly 2.0.0's operators with a CUDA implementation choice (spikingjelly/_ops/*/__init__.py);
# tests/test_devices.py keeps this equal to what the installed spikingjelly declares
SJ_OPERATORS = ("ACTIVATION_AWARE_IF", "CLIF", "EIF", "IF", "ILIF", "IZHIKEVICH", "LIF", "PLIF", "QIF",
                "SPIKE_COMPRESS", "STBIF", "TEMPOTRON_RESPONSE", "TEMPOTRON_ROOTS", "TEMPOTRON_WEIGHT_GRADIENT")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def backend_variable(operator: str) -> str:
    return f"SJ_{operator}_CUDA_IMPLEMENTATION"


def parse_device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, checked for form only (no torch import: ``--help`` stays quick)."""
    name = str(text).strip().lower()
    if not _DEVICE.match(name):
        raise ValueError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return name


def check_device(name: str, *, source: str = "--device") -> str:
    """``name`` if this process can compute there; otherwise a ValueError that says why and what to do."""
    name = parse_device(name)
    if name == "cpu":
        return name
    import torch

    if not torch.cuda.is_available():
        build = torch.__version__
        why = ("this torch is a CPU build" if torch.version.cuda is None
               else f"torch {build} was built for CUDA {torch.version.cuda} but sees no GPU (driver, "
                    "CUDA_VISIBLE_DEVICES?)")
        raise ValueError(f"{source} {name}: CUDA is not available: {why}; use --device cpu, or install torch "
                         f"{build.split('+')[0]} built for the machine's CUDA (pytorch.org lists the index URLs)")
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise ValueError(f"{source} {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                         f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return name


def apply_backend(backend: str, environ=None) -> None:
    """Make spikingjelly's neuron operators use ``backend`` on CUDA (one of :data:`BACKENDS`).

    Refused when spikingjelly's operators are already imported with another choice: the choice
    is read at import and a later change would silently not apply."""
    env = os.environ if environ is None else environ
    if backend not in BACKENDS:
        raise ValueError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if environ is None and "spikingjelly._ops" in sys.modules:
        held = {env.get(backend_variable(op), "auto") for op in SJ_OPERATORS}
        if held != {backend}:
            raise ValueError(f"--backend {backend}: spikingjelly's neuron operators are already imported in this "
                             f"process with {sorted(held)}; set the backend before importing spikingjelly")
    for op in SJ_OPERATORS:
        env[backend_variable(op)] = backend


def backend_in_use(environ=None) -> str:
    """The backend the neuron operators were told to use (``auto`` unless set; ``mixed`` when
    the variables disagree), for the record of a run."""
    env = os.environ if environ is None else environ
    held = {env.get(backend_variable(op), "auto") for op in SJ_OPERATORS}
    return held.pop() if len(held) == 1 else "mixed"


def describe(device: str) -> dict[str, str]:
    """What a run's config records about where it computed: on CUDA the device, the GPU's name
    and the neuron backend; nothing on the CPU, so CPU runs keep the config hash they always had."""
    if not str(device).startswith("cuda"):
        return {}
    import torch

    d = torch.device(device)
    index = d.index if d.index is not None else torch.cuda.current_device()
    return {"device": f"cuda:{index}", "gpu": torch.cuda.get_device_name(index), "neuron_backend": backend_in_use()}


def split_cell(cell: dict) -> tuple[dict, str]:
    """``(the cell without its device, the device)``: a bench cell's ``device`` says where the
    cell computes (absent: the CPU), not what the experiment is, so configs never see it."""
    rest = dict(cell)
    return rest, parse_device(rest.pop("device", "cpu"))
