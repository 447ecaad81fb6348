"""GeneratorSource: synthetic events, reproducible from a seed, for demos and benchmarks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from bspump.batch import EventBatch
from bspump.processor import Source, SourceBatch

if TYPE_CHECKING:
    from bspump.application import Application
    from bspump.pipeline import Pipeline


class GeneratorSource(Source):
    """Events ``{user_id, type, timestamp, value, latitude, longitude}``.

    ``count`` events (0: endless) over ``users`` user ids and ``types`` event types.
    Event ``i`` has timestamp ``start_time + i / events_per_second``, moved back by up
    to ``out_of_order`` seconds at random. ``rate`` limits wall-clock events per
    second (0: as fast as possible). Values are normal around 100 with a rare spike,
    so anomaly detectors have something to find. The same seed and batch give the
    same events, and a restart at any position continues the same sequence.
    """

    ConfigDefaults: dict[str, Any] = {
        "count": 1_000_000,
        "users": 10_000,
        "types": 10,
        "seed": 1,
        "start_time": 1767225600.0,  # 2026-01-01T00:00:00Z
        "events_per_second": 100.0,
        "out_of_order": 0.0,
        "rate": 0.0,
        "batch": 5000,
        "lat_min": -90.0,
        "lat_max": 90.0,
        "lon_min": -180.0,
        "lon_max": 180.0,
        "spike_probability": 0.001,
    }
    supports_columns = True

    def __init__(self, app: Application, pipeline: Pipeline, id: str | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        c = self.Config
        self.count = int(c["count"])
        self.users = int(c["users"])
        self.types = int(c["types"])
        self.batch = int(c["batch"])
        self.eps = float(c["events_per_second"])
        for key, value in (("count", self.count), ("users", self.users - 1),
                           ("types", self.types - 1), ("batch", self.batch - 1)):
            if value < 0:
                raise self.config_error(key, "must be positive")
        if not self.eps > 0:
            raise self.config_error("events_per_second", "must be positive")
        if not (-90 <= c["lat_min"] < c["lat_max"] <= 90):
            raise self.config_error("lat_min", "need -90 <= lat_min < lat_max <= 90")
        if not (-180 <= c["lon_min"] < c["lon_max"] <= 180):
            raise self.config_error("lon_min", "need -180 <= lon_min < lon_max <= 180")
        self._position = 0

    def seek(self, position: Any) -> None:
        """Continue with event number ``position``."""
        self._position = int(position)

    def columns(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Events ``start``..``stop`` as numpy columns (the same values as the dicts)."""
        c = self.Config
        b = self.batch
        parts: list[dict[str, np.ndarray]] = []
        for block in range(start // b, (stop - 1) // b + 1):
            rng = np.random.default_rng([int(c["seed"]), block])
            lo, hi = block * b, (block + 1) * b
            idx = np.arange(lo, hi, dtype=np.int64)
            ts = float(c["start_time"]) + idx / self.eps
            ooo = float(c["out_of_order"])
            if ooo > 0:
                ts = ts - rng.uniform(0.0, ooo, b)
            else:
                rng.uniform(0.0, 1.0, b)  # keep the stream the same with and without jitter
            value = rng.normal(100.0, 10.0, b)
            spikes = rng.random(b) < float(c["spike_probability"])
            value[spikes] *= 10.0
            col = {
                "user": rng.integers(0, self.users, b),
                "type": rng.integers(0, self.types, b),
                "timestamp": np.round(ts, 3),
                "value": np.round(value, 3),
                "latitude": np.round(rng.uniform(c["lat_min"], c["lat_max"], b), 4),
                "longitude": np.round(rng.uniform(c["lon_min"], c["lon_max"], b), 4),
            }
            s0, s1 = max(start, lo) - lo, min(stop, hi) - lo
            parts.append({k: v[s0:s1] for k, v in col.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def column_batch(self, start: int, stop: int) -> EventBatch:
        """Events ``start``..``stop`` as an EventBatch (user_id and type categorical)."""
        col = self.columns(start, stop)
        return EventBatch(col["timestamp"], {
            "user_id": col["user"], "type": col["type"], "timestamp": col["timestamp"],
            "value": col["value"], "latitude": col["latitude"], "longitude": col["longitude"],
        }, {"user_id": "u", "type": "type"})

    def events(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Events ``start``..``stop`` as dicts."""
        return self.column_batch(start, stop).to_dicts()

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Yield batches until ``count`` events (forever when count is 0)."""
        rate = float(self.Config["rate"])
        began = time.monotonic()
        emitted = 0
        while self.count == 0 or self._position < self.count:
            stop = self._position + self.batch
            if self.count:
                stop = min(stop, self.count)
            if self.want_columns:
                batch = SourceBatch([], [], stop, columns=self.column_batch(self._position, stop))
            else:
                batch = SourceBatch(self.events(self._position, stop), [], stop)
            emitted += len(batch)
            self._position = stop
            yield batch
            if rate > 0:
                ahead = emitted / rate - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            else:
                await asyncio.sleep(0)
