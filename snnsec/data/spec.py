"""``DataSpec``: the record of how a dataset was turned into model input.

It travels with everything the data touches: checkpoint metadata, every result row, and
the audit, so that a number can always be traced back to the sensor, time steps and
framing that produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# How a recording becomes T frames (snnsec.data.frames.frame_bounds has the exact rules):
#   events     tonic ToFrame(n_event_bins=T): N // T events per frame, the last N % T dropped
#   time       tonic ToFrame(n_time_bins=T): equal windows from the first event, the tail dropped
#   time-zero  equal windows from t = 0 to the last event, every event kept
#   number     spikingjelly split_by='number': N // T events per frame, the last frame takes the rest
SLICINGS = ("events", "time", "time-zero", "number")


@dataclass(frozen=True)
class DataSpec:
    """How events became frames ``[T, P, H, W]``.

    ``slicing`` is one of :data:`SLICINGS`: ``"events"`` (tonic's equal event counts,
    as Sneaky Spikes uses), ``"time"`` (tonic's equal time windows from the first event),
    ``"time-zero"`` (equal windows from t = 0) or ``"number"`` (spikingjelly's
    ``split_by='number'``). A checkpoint's spec states how its model was fed, and the audit
    and attacks frame their data exactly that way.
    ``binary`` frames hold 1 where a pixel fired at least once in the bin, else the
    per-pixel event count. Binary frames live in [0, 1], which is the attack domain.
    """

    name: str
    sensor_size: tuple[int, int, int]  # (W, H, P), tonic's order
    T: int
    slicing: str = "events"
    binary: bool = True
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.slicing not in SLICINGS:
            raise ValueError(f"DataSpec.slicing: expected one of {SLICINGS}, got {self.slicing!r}")
        if int(self.T) < 1:
            raise ValueError(f"DataSpec.T: expected a positive number of time steps, got {self.T!r}")
        object.__setattr__(self, "sensor_size", tuple(int(v) for v in self.sensor_size))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))

    @property
    def width(self) -> int:
        return self.sensor_size[0]

    @property
    def height(self) -> int:
        return self.sensor_size[1]

    @property
    def polarities(self) -> int:
        return self.sensor_size[2]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        """``(T, P, H, W)``: the shape of one sample's frames."""
        return (self.T, self.polarities, self.height, self.width)

    def replace(self, **changes: Any) -> "DataSpec":
        return DataSpec(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sensor_size"] = list(self.sensor_size)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "DataSpec") -> "DataSpec":
        """Build from metadata; ``source`` names the file in error messages."""
        required = ("name", "sensor_size", "T")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{source}: data spec is missing field(s) {missing}; expected {list(required)}")
        sensor = d["sensor_size"]
        if not (isinstance(sensor, (list, tuple)) and len(sensor) == 3):
            raise ValueError(f"{source}: data spec field 'sensor_size' must be [W, H, P], got {sensor!r}")
        known = {k: d[k] for k in ("name", "sensor_size", "T", "slicing", "binary", "classes") if k in d}
        return cls(**known)
