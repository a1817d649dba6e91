"""The dynamic (sample-specific) trigger of Sneaky Spikes: a spiking autoencoder G makes an
additive perturbation ``gamma * tanh(G(x))``, trained jointly with the classifier in the
LIRA-style bilevel loop.

Per batch: (1) classifier loss ``L = alpha * CE(f(x), y) + (1 - alpha) * CE(f(x + d), t)``;
(2) one *virtual* classifier step ``theta' = theta - lr * grad L`` with ``create_graph=True``;
(3) the generator is updated to make ``f_theta'(x + d)`` predict the target; (4) the
classifier takes a real step on L with the perturbation of the generator frozen at the start
of the epoch (the reference's ``atkmodel``). No epoch is chosen by looking at the test set:
the last epoch is the result (the reference picked its best epoch on the test set).

Clean and triggered halves go through the classifier as one batch. Forwarded separately,
train-mode BatchNorm normalises each half by its own statistics and so subtracts most of an
additive perturbation of 0.01: the classifier cannot tell the halves apart, and clean
accuracy collapses (CA 0.31 after 3 epochs on N-MNIST before this change).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as Fn
from spikingjelly.activation_based import functional as sjf
from spikingjelly.activation_based import neuron, surrogate

from snnsec.attacks.backdoor.triggers import register_trigger
from snnsec.data.loading import frames_and_labels
from snnsec.harness import device_of


def _if():
    return neuron.IFNode(step_mode="m", surrogate_function=surrogate.ATan(), detach_reset=True)


class _Seq(nn.Module):
    """Apply a stateless 2-D module to ``[T, B, C, H, W]`` by folding time into the batch."""

    def __init__(self, *mods):
        super().__init__()
        self.body = nn.Sequential(*mods)

    def forward(self, x):
        T, B = x.shape[:2]
        y = self.body(x.flatten(0, 1))
        return y.reshape(T, B, *y.shape[1:])


class SpikingAutoencoder(nn.Module):
    """Conv encoder (2 stride-2 blocks) and transposed-conv decoder with IF neurons, as the
    reference's ``AutoencoderMNIST``; the last layer spikes, so ``tanh`` of its output is 0 or
    tanh(1). Input and output ``[B, T, P, H, W]``.

    ``width`` defaults to (32, 64) instead of the reference's (128, 256): 16x fewer
    multiply-adds, which keeps the bilevel loop affordable on a CPU.
    """

    def __init__(self, in_channels: int, hw: tuple[int, int], width: tuple[int, int] = (32, 64)):
        super().__init__()
        self.in_channels, self.hw, self.width = int(in_channels), tuple(int(v) for v in hw), tuple(int(v) for v in width)
        c1, c2 = self.width
        self.enc = nn.ModuleList([
            _Seq(nn.Conv2d(in_channels, c1, 3, 2, 1), nn.BatchNorm2d(c1)), _if(),
            _Seq(nn.Conv2d(c1, c2, 3, 2, 1), nn.BatchNorm2d(c2)), _if(),
            _Seq(nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.BatchNorm2d(c1)), _if(),
            # BN before the output neuron too: without it the last IF layer starts silent (its
            # input is far below threshold), G(x) = 0 and the generator gets no useful signal.
            _Seq(nn.ConvTranspose2d(c1, in_channels, 4, 2, 1), nn.BatchNorm2d(in_channels)), _if(),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sjf.reset_net(self)
        H, W = self.hw
        y = x.transpose(0, 1)  # [T, B, P, H, W]
        for m in self.enc:
            y = m(y)
        # Stride-2 round trips of odd sizes come back a pixel larger (34 -> 17 -> 9 -> 36); crop.
        y = y[..., :H, :W]
        if y.shape[-2:] != (H, W):
            y = Fn.pad(y, (0, W - y.shape[-1], 0, H - y.shape[-2]))
        return torch.tanh(y.transpose(0, 1))


@register_trigger
@dataclass
class DynamicTrigger:
    """``x -> x + gamma * G(x)``, clamped to [0, 1] on binary frames; G is kept in eval mode when applied."""

    name: ClassVar[str] = "dynamic"
    # trained with the victim (train_dynamic), a perturbation of each sample's frames, not events
    learned: ClassVar[bool] = True
    injects_events: ClassVar[bool] = False
    needs_fit: ClassVar[bool] = False
    has_weights: ClassVar[bool] = True

    generator: SpikingAutoencoder
    gamma: float = 0.01
    weights: str | None = None
    # binary frames live in [0, 1], the model's input domain, so the sum is clamped there; count
    # frames are left as the reference leaves them (its note: clamping alone raises the ASR)
    clamp: bool = True

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable application (for training the generator).

        The reference leaves ``x + gamma * G(x)`` unclamped. Binary frames live in [0, 1], the
        model's input domain, so there the sum is clamped; on count frames a clamp at 1 would
        erase every count above 1 (measured with the reference preset at T = 16: SSIM 0.85 and a
        mean L-inf change of 4.75 instead of gamma), so they are left unclamped, as the reference.
        """
        out = x + self.gamma * self.generator(x)
        return torch.clamp(out, 0.0, 1.0) if self.clamp else out

    @torch.no_grad()
    def __call__(self, frames):
        x = torch.as_tensor(frames)
        single = x.dim() == 4
        if single:
            x = x[None]
        was = self.generator.training
        self.generator.eval()
        dev = device_of(self.generator)  # computed where the generator is, returned where the frames are
        try:
            out = torch.cat([self.perturb(x[i : i + 64].to(dev)).to(x.device)
                             for i in range(0, len(x), 64)]) if len(x) else x
        finally:
            self.generator.train(was)
        return out[0] if single else out

    def to_spec(self) -> dict[str, Any]:
        g = self.generator
        return {"name": "dynamic", "gamma": float(self.gamma), "clamp": bool(self.clamp), "in_channels": g.in_channels, "hw": list(g.hw),
                "width": list(g.width), "weights": self.weights}

    def save(self, path) -> None:
        from safetensors.torch import save_file

        from snnsec._io import atomic_write_with

        state = {k: v.detach().contiguous().cpu() for k, v in self.generator.state_dict().items()}
        atomic_write_with(path, lambda tmp: save_file(state, tmp))
        self.weights = Path(path).name

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *, base_dir=None) -> "DynamicTrigger":
        from safetensors.torch import load_file

        from snnsec.checkpoint import regular_file

        missing = [k for k in ("gamma", "in_channels", "hw", "weights") if spec.get(k) is None]
        if missing:
            raise ValueError(f"dynamic trigger spec: missing field(s) {missing}")
        # a checkpoint's metadata names the file: only a plain name beside the checkpoint is read,
        # never a path that reaches elsewhere on the machine
        name = str(spec["weights"])
        if Path(name).name != name or name in (".", ".."):
            raise ValueError(f"dynamic trigger spec: field 'weights' must be a file name beside the checkpoint, "
                             f"got {name!r}")
        path = (Path(base_dir) if base_dir is not None else Path()) / name
        regular_file(path, "generator weights")
        gen = SpikingAutoencoder(spec["in_channels"], tuple(spec["hw"]), tuple(spec.get("width", (32, 64))))
        gen.load_state_dict(load_file(str(path)))
        gen.eval()
        # checkpoints written before the field existed were all clamped
        return cls(gen, float(spec["gamma"]), weights=name, clamp=bool(spec.get("clamp", True)))


@dataclass
class DynamicConfig:
    """Reference defaults: alpha 0.5, gamma 0.01 (all its scripts), Adam lr 1e-3 for both."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    generator_lr: float = 1e-3
    virtual_lr: float = 1e-3
    alpha: float = 0.5
    gamma: float = 0.01
    # clamp the triggered frames to [0, 1]: binary frames (see DynamicTrigger.clamp)
    clamp: bool = True
    target: int = 0
    mode: str = "all-to-one"
    seed: int = 0
    width: tuple[int, int] = (32, 64)


def _joint_loss(model, x, x_bd, y, t, alpha):
    logits = model(torch.cat([x, x_bd]))
    return alpha * Fn.cross_entropy(logits[: len(x)], y) + (1 - alpha) * Fn.cross_entropy(logits[len(x):], t)


def train_dynamic(model: nn.Module, train_ds, config: DynamicConfig, *, num_classes: int,
                  progress: bool = True) -> tuple[DynamicTrigger, list[dict[str, float]]]:
    """Co-train ``model`` (in place) and a generator; returns the trigger and per-epoch history."""
    from torch.func import functional_call
    from tqdm.auto import tqdm

    from snnsec.attacks.backdoor.poison import poison_label
    from snnsec.harness import calibrate_bn

    torch.manual_seed(config.seed)
    x_all, y_all = frames_and_labels(train_ds)
    T, P, H, W = x_all.shape[1:]
    dev = device_of(model)  # the data stay on the CPU; each batch moves to the model's device
    gen = SpikingAutoencoder(P, (H, W), config.width).to(dev)
    trig = DynamicTrigger(gen, config.gamma, clamp=config.clamp)
    opt_c = torch.optim.Adam(model.parameters(), lr=config.lr)
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.generator_lr)
    # The reference re-creates the classifier's Adam every epoch, which resets its moments;
    # we keep one optimiser, as any ordinary training loop does.
    g = torch.Generator().manual_seed(config.seed)
    calib = x_all[torch.randperm(len(x_all), generator=torch.Generator().manual_seed(config.seed))[:256]].to(dev)
    names = [n for n, _ in model.named_parameters()]
    history = []
    n_batches = math.ceil(len(x_all) / config.batch_size)
    for epoch in range(config.epochs):
        sjf.reset_net(gen)  # neuron states hold graph tensors, which deepcopy refuses
        frozen = copy.deepcopy(gen)  # the epoch's atkmodel
        # Eval-mode BN with running statistics that lag the weights (at epoch 1: fresh ones)
        # silences the generator's spiking layers, so G(x) = 0 and half of the classifier's
        # loss would teach "clean input -> target". Recompute the statistics for these weights.
        calibrate_bn(frozen, calib)
        frozen.eval()
        frozen_trig = DynamicTrigger(frozen, config.gamma, clamp=config.clamp)
        perm = torch.randperm(len(x_all), generator=g)
        model.train()
        gen.train()
        sums = {"loss": 0.0, "loss_gen": 0.0}
        bar = tqdm(range(n_batches), desc=f"dynamic epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for b in bar:
            idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
            x, y = x_all[idx].to(dev), y_all[idx].to(dev)
            t = poison_label(y, config.target, config.mode, num_classes)

            # (1)-(2): virtual step of the classifier, differentiable w.r.t. the generator.
            params = dict(model.named_parameters())
            x_bd = trig.perturb(x)
            loss = _joint_loss(model, x, x_bd, y, t, config.alpha)
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True, allow_unused=True)
            virtual = {n: (params[n] - config.virtual_lr * gr if gr is not None else params[n]) for n, gr in zip(names, grads)}
            # (3): generator step against the virtually updated classifier.
            logits = functional_call(model, virtual, (torch.cat([x, x_bd]),))
            loss_gen = Fn.cross_entropy(logits[len(x):], t)
            opt_g.zero_grad(set_to_none=True)
            model.zero_grad(set_to_none=True)
            loss_gen.backward()
            opt_g.step()
            del grads, virtual, loss

            # (4): real classifier step with the epoch's frozen generator.
            with torch.no_grad():
                x_bd = frozen_trig.perturb(x)
            loss = _joint_loss(model, x, x_bd, y, t, config.alpha)
            opt_c.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_c.step()
            sums["loss"] += loss.item()
            sums["loss_gen"] += loss_gen.item()
        history.append({"epoch": epoch + 1, **{k: v / n_batches for k, v in sums.items()}})
    sjf.reset_net(gen)
    calibrate_bn(gen, calib)  # the trigger is applied in eval mode from now on
    model.eval()
    gen.eval()
    return trig, history


