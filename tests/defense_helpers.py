"""Small stand-ins for defense tests: a tiny multi-step spikingjelly conv net wrapped in the
harness's SpikingClassifier, synthetic event frames, and a planted backdoor.

``tiny_factory`` doubles as a user architecture (``defense_helpers:tiny_factory``) for the
audit of a model registered by the user.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate

from snnsec.harness import SpikingClassifier

T, P, H, W, K = 4, 2, 12, 12, 8


def _lif():
    return neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")


def tiny_factory(*, in_channels, num_classes, sensor_hw, T, width=8, hidden=32):
    h, w = sensor_hw
    net = nn.Sequential(layer.Conv2d(in_channels, width, 3, padding=1, bias=False), layer.BatchNorm2d(width), _lif(),
                        layer.AvgPool2d(2), layer.Flatten(), layer.Linear(width * (h // 2) * (w // 2), hidden), _lif(),
                        layer.Linear(hidden, num_classes))
    functional.set_step_mode(net, "m")
    return SpikingClassifier(net, T=T, in_channels=in_channels, num_classes=num_classes, sensor_hw=sensor_hw)


def tiny(num_classes=K, seed=0):
    torch.manual_seed(seed)
    return tiny_factory(in_channels=P, num_classes=num_classes, sensor_hw=(H, W), T=T)


def synthetic(n_per_class=32, seed=0, K=K):
    """Each class is a bar at its own place (rows, then columns) plus sparse noise, as binary
    frames; the bottom-right corner stays free for the trigger."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(K):
        x = (torch.rand(n_per_class, T, P, H, W, generator=g) < 0.08).float()
        pos = 1 + 2 * (c % (K // 2))
        bar = (torch.rand(n_per_class, T, 2, W - 5, generator=g) < 0.7).float()
        if c < K // 2:
            x[:, :, c % P, pos:pos + 2, 1:W - 4] = bar
        else:
            x[:, :, c % P, 1:H - 4, pos:pos + 2] = bar.transpose(-1, -2)
        xs.append(x)
        ys.append(torch.full((n_per_class,), c))
    return torch.cat(xs), torch.cat(ys)


def stamp_corner(x):
    """The planted trigger: a 2x2 square of ON events in the bottom-right corner, every frame."""
    x = x.clone()
    x[:, :, 0, -2:, -2:] = 1.0
    return x


def poison(x, y, target, rate=0.1, seed=0, trigger=stamp_corner):
    g = torch.Generator().manual_seed(seed + 1)
    idx = torch.randperm(len(x), generator=g)[: int(rate * len(x))].sort().values
    x, y = x.clone(), y.clone()
    x[idx] = trigger(x[idx])
    y[idx] = target
    return x, y, idx


def fit(model, x, y, epochs=12, seed=0):
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(seed + 2)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            b = perm[i:i + 32]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


_TRAINED: dict = {}


def train_tiny(x, y, epochs=12, seed=0, poison_target=None, rate=0.1, trigger=stamp_corner):
    """A TinySNN trained on (x, y); with ``poison_target``, ``rate`` of the samples carry the
    trigger and the target label (dirty label, all-to-one). Returns (model, poisoned indices).
    Trained weights are cached for the test session: several test files use the same models."""
    key = (x.shape, float(x.sum()), epochs, seed, poison_target, rate, trigger)
    if key not in _TRAINED:
        idx = torch.empty(0, dtype=torch.long)
        xx, yy = x, y
        if poison_target is not None:
            xx, yy, idx = poison(x, y, poison_target, rate, seed, trigger)
        _TRAINED[key] = (fit(tiny(int(y.max()) + 1, seed), xx, yy, epochs, seed).state_dict(), idx)
    state, idx = _TRAINED[key]
    model = tiny(int(y.max()) + 1, seed)
    model.load_state_dict(state)
    return model.eval(), idx



class FramesDataset(torch.utils.data.Dataset):
    """Frames and labels as a dataset of the kind snnsec.data.load returns (targets, frames_tensor)."""

    def __init__(self, x, y):
        self.x, self.targets = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.targets[i])

    def frames_tensor(self):
        return self.x
