"""Event-camera augmentation on frames (spatial jitter, drop, time jitter, polarity flip), used by
training (:mod:`snnsec.train`, ``augment``) and by STCL's two views (:mod:`snnsec.hardening.stcl`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from snnsec.train_settings import AUGMENT_DEFAULTS


@dataclass
class EventAugment:
    """Event-camera augmentations applied to frames ``[B, T, P, H, W]``, each sample its own draw.

    - ``max_shift``: spatial jitter, a whole-sample translation by up to this many pixels in x
      and y (zero fill); 2 px of a 34 px N-MNIST frame keeps the digit inside the sensor.
    - ``drop``: probability that each (step, polarity, pixel) entry is dropped, as tonic's
      DropEvent drops events.
    - ``time_jitter``: probability that an entry moves to the previous or next time step
      (half each; entries at the ends stay), the frame analogue of tonic's TimeJitter.
    - ``flip_polarity``: probability of swapping the ON/OFF channels of a sample (tonic's
      RandomFlipPolarity default p=0.5); a no-op with one polarity channel. Set it to 0 where
      polarity carries the class (e.g. motion direction in gestures).

    Binary frames stay binary: entries that time jitter stacks on one bin are clamped to 1.
    """

    max_shift: int = AUGMENT_DEFAULTS["max_shift"]
    drop: float = AUGMENT_DEFAULTS["drop"]
    time_jitter: float = AUGMENT_DEFAULTS["time_jitter"]
    flip_polarity: float = AUGMENT_DEFAULTS["flip_polarity"]

    def __post_init__(self) -> None:
        if int(self.max_shift) < 0:
            raise ValueError(f"EventAugment.max_shift: expected pixels >= 0, got {self.max_shift!r}")
        for name in ("drop", "time_jitter", "flip_polarity"):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"EventAugment.{name}: expected a probability in [0, 1], got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"EventAugment: expected frames [B, T, P, H, W], got shape {tuple(x.shape)}")
        binary = bool(x.max() <= 1)
        out = x
        if self.max_shift:
            out = shift(out, int(self.max_shift), generator)
        if self.drop:
            out = out * (torch.rand(out.shape, generator=generator, device=out.device) >= self.drop)
        if self.time_jitter:
            out = jitter_time(out, float(self.time_jitter), generator)
            if binary:
                out = out.clamp(max=1.0)
        if self.flip_polarity and out.shape[2] == 2:
            flip = torch.rand(out.shape[0], generator=generator, device=out.device) < self.flip_polarity
            out = torch.where(flip[:, None, None, None, None], out.flip(2), out)
        return out


def shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each sample by its own random ``(dy, dx)`` in ``[-max_shift, max_shift]``."""
    B, T, P, H, W = x.shape
    s = int(max_shift)
    d = torch.randint(-s, s + 1, (2, B), generator=generator, device=x.device)
    padded = F.pad(x, (s, s, s, s))
    rows = (s - d[0])[:, None] + torch.arange(H, device=x.device)  # [B, H]
    cols = (s - d[1])[:, None] + torch.arange(W, device=x.device)  # [B, W]
    b = torch.arange(B, device=x.device)[:, None, None]
    # advanced indices split by slices go first: the result is [B, H, W, T, P]
    return padded[b, :, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 4, 1, 2)


def jitter_time(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Move each entry one step earlier or later with probability ``p/2`` each (ends stay)."""
    u = torch.rand(x.shape, generator=generator, device=x.device)
    later = u < p / 2
    earlier = (u >= p / 2) & (u < p)
    later[:, -1] = False
    earlier[:, 0] = False
    stay = ~(later | earlier)
    out = x * stay
    out[:, 1:] += (x * later)[:, :-1]
    out[:, :-1] += (x * earlier)[:, 1:]
    return out
