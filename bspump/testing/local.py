"""``workers=0``: a pipeline run in this process, by BSPump alone (no cluster runtime).

The cluster's rules for a record are kept small here, because ``bspump`` must not import
the cluster: a record without a usable shard key or event time is a dead letter, one
behind the watermark is late; the watermark is the newest event time minus the allowed
lateness and moves on a tick (the finest window resolution) at a time, before the
record that moved it, as the cluster cuts its stream; a record far ahead of the stream
is held as the cluster holds it (``max_time_jump``); closed windows are read from the
analyzer's ring as the coordinator reads them from shared memory. The config's source
override is applied as the cluster's loader applies it; the sink is a TestingSink.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bspump import Application, Pipeline, RunInfo, Source
from bspump.analyzer import SessionAnalyzer, TimeWindowAnalyzer
from bspump.errors import RecordError
from bspump.records import parse_event_time
from bspump.testing.pieces import TestingSink
from bspump.testing.result import PipelineResult, number, plain


def _key_fields(shard_key: str) -> list[str]:
    """The fields a shard key reads: ``user_id``, or ``geo_cell(lat, lon, size)``'s two."""
    spec = shard_key.strip()
    if spec.startswith("geo_cell(") and spec.endswith(")"):
        return [part.strip() for part in spec[len("geo_cell("):-1].split(",")[:2]]
    return [spec]


def _check_key(event: Any, fields: list[str]) -> None:
    if not isinstance(event, dict):
        raise ValueError("record is not an object")
    for name in fields:
        if name not in event:
            raise ValueError(f"missing shard key field {name!r}")
        if event[name] is None or isinstance(event[name], (dict, list)):
            raise ValueError(f"shard key field {name!r} is {type(event[name]).__name__}")


def _tick_of(pipeline: Pipeline, time_field: str | None) -> float:
    """How often the watermark moves on: the finest window resolution (as the cluster)."""
    resolutions = [p.resolution for p in pipeline.Processors if isinstance(p, TimeWindowAnalyzer)]
    timeouts = [p.session_timeout for p in pipeline.Processors
                if isinstance(p, SessionAnalyzer)]
    if resolutions:
        return float(min(resolutions))
    if timeouts:
        return max(float(min(timeouts)) / 4, 0.001)
    return 60.0 if time_field else 1.0


class _LocalRun:
    """Drives one pipeline in this process: routing rules, watermarks, window rows."""

    def __init__(self, pipeline: Pipeline, result: PipelineResult, shard_key: str,
                 time_field: str | None, lateness: float, max_time_jump: float = 3600.0,
                 time_jump_confirm: int = 100) -> None:
        self.pipeline = pipeline
        self.result = result
        self.key_fields = _key_fields(shard_key)
        self.time_field = time_field
        self.lateness = lateness
        self.tick = _tick_of(pipeline, time_field)
        self.watermark = -math.inf
        self.max_time = -math.inf
        self.max_jump = max_time_jump if time_field else 0.0
        self.confirm = time_jump_confirm
        self.held: list[tuple[float, Any]] = []
        self.since = 0  # records in time since the first one was held
        self.times: list[float] = []
        self.events: list[Any] = []
        self.analyzers = {p.Id: p for p in pipeline.Processors
                          if isinstance(p, TimeWindowAnalyzer)}
        if any(getattr(p, "anomaly_history", 0) for p in self.analyzers.values()):
            raise ValueError("anomalies on merged windows (anomaly_history) are found by the "
                             "cluster's coordinator: run this pipeline with workers >= 1")

    def feed(self, records: Sequence[Any]) -> None:
        """Route one source batch: dead letters, late events, data, watermarks."""
        for record in records:
            try:
                _check_key(record, self.key_fields)
                t = parse_event_time(record[self.time_field]) if self.time_field else 0.0
            except KeyError:
                self._dead(record, f"missing time field {self.time_field!r}")
                continue
            except (ValueError, RecordError) as e:
                self._dead(record, str(e))
                continue
            if self.time_field is None:
                self._data(t, record)
            else:
                self._in_order(t, record)
        self._flush()

    def _in_order(self, t: float, record: Any) -> None:
        """The far-ahead rule: a record more than max_time_jump ahead of the newest time is
        held until time_jump_confirm held records confirm the jump (all released, in
        order) or as many records in time refute it (all dead letters)."""
        if self.max_jump > 0 and math.isfinite(self.max_time) \
                and t > self.max_time + self.max_jump:
            self.held.append((t, record))
            if len(self.held) >= self.confirm:
                self.release()
            return
        self._accept(t, record)
        if self.held:
            self.since += 1
            if self.since >= self.confirm:
                for _, r in self.held:
                    self._dead(r, f"timestamp too far ahead (max_time_jump = {self.max_jump:g} "
                                  f"s) and the next {self.confirm} records did not confirm it")
                self.held, self.since = [], 0

    def release(self) -> None:
        """Let every held record in, in input order, as if it had just arrived."""
        held, self.held, self.since = self.held, [], 0
        for t, record in held:
            self._accept(t, record)

    def _accept(self, t: float, record: Any) -> None:
        """Late behind the watermark, else data; the watermark moves a tick at a time."""
        if t < self.watermark:
            self.result.late_events.append(
                {"event_time": t, "watermark": number(self.watermark), "record": record})
            return
        self.max_time = max(self.max_time, t)
        new = max(self.watermark, self.max_time - self.lateness)
        crossed = math.floor(new / self.tick) > math.floor(self.watermark / self.tick) \
            if math.isfinite(self.watermark) else math.isfinite(new)
        self.watermark = new
        if crossed:
            # As the cluster cuts the stream: data before, then the watermark, then the
            # record that moved it.
            self._advance(new)
        self._data(t, record)

    def _dead(self, record: Any, reason: str) -> None:
        self.result.dead_letters.append({"reason": reason, "record": record})

    def _data(self, t: float, record: Any) -> None:
        self.times.append(t)
        self.events.append(record)

    def _flush(self) -> None:
        if self.events:
            self.pipeline.process_batch(self.times, self.events)
            self.times, self.events = [], []

    def _advance(self, watermark: float) -> None:
        self._flush()
        self.pipeline.advance(watermark)
        self._collect()

    def _collect(self) -> None:
        """Window rows of the periods that just closed, ended sessions, dead letters."""
        result = self.result
        for aid, news in self.pipeline.take_report().items():
            analyzer = self.analyzers.get(aid)
            if analyzer is not None and news.get("closed"):
                ring = analyzer.window_array
                assert ring is not None  # it closed a period, so it has counted
                keys = analyzer.keys
                rows = result.windows.setdefault(aid, [])
                res = analyzer.resolution
                for period, slot in sorted(news["closed"]):
                    counts = ring[slot, :len(keys)]
                    found = {keys[i]: v for i, v in zip(np.flatnonzero(counts).tolist(),
                                                         counts[counts != 0].tolist(),
                                                         strict=True)}
                    for key in sorted(found, key=lambda k: (type(k).__name__, str(k))):
                        rows.append({"window_start": number(period * res),
                                     "window_end": number((period + 1) * res),
                                     "key": key, "count": number(found[key])})
            for key, first, last, events in news.get("ended") or ():
                result.sessions.setdefault(aid, []).append(
                    {"key": key, "start": number(first), "end": number(last),
                     "events": events})
            for key, t, value, mean, std, score in news.get("anomalies") or ():
                result.anomalies.setdefault(aid, []).append(
                    {"key": key, "event_time": t, "value": value, "mean": mean, "std": std,
                     "score": score})
        for d in self.pipeline.take_dead_letters():
            result.dead_letters.append({"reason": d["reason"], "processor": d.get("processor"),
                                        "event_time": d.get("event_time"),
                                        "record": d["record"]})

    def finish(self) -> None:
        """End of input: held records go in (nothing refuted them), every window closes,
        every session ends, the sink flushes."""
        self.release()
        self._flush()
        last = self.max_time if math.isfinite(self.max_time) else 0.0
        self.pipeline.finish(last)
        self._collect()


async def _drain(source: Source, run: _LocalRun) -> None:
    async for batch in source.batches():
        for raw, reason in batch.dead:
            run.result.dead_letters.append({"reason": reason, "record": raw})
        records = batch.columns.to_dicts() if batch.columns is not None else batch.records
        run.feed(records)


def _piece(ref: str) -> type[Source]:
    module, _, name = ref.partition(":")
    piece = getattr(importlib.import_module(module), name)
    if not (isinstance(piece, type) and issubclass(piece, Source)):
        raise ValueError(f"{ref} is not a bspump.Source")
    return piece


def run_here(pipeline_cls: type[Pipeline], pipeline_id: str, config: Path,
             routing: Mapping[str, Any], replace_sink: bool) -> PipelineResult:
    """Run the pipeline in this process (see the module docstring) with the config a
    cluster run would read; ``routing`` holds its ``[pipeline:ID]`` keys."""
    app = Application(config)
    pipeline = pipeline_cls(app, pipeline_id)
    source_ref = routing.get("source")
    if source_ref:
        # What the cluster's loader does with [pipeline:ID] source = module:Class.
        pipeline.Source = _piece(source_ref)(app, pipeline)
    if replace_sink or pipeline.Sink is None:
        pipeline.Sink = TestingSink(app, pipeline)
    pipeline.check_config()
    for piece in pipeline.pieces():
        piece.check()
    source, sink = pipeline.Source, pipeline.Sink
    assert source is not None
    result = PipelineResult(workers=0)
    time_field = routing.get("time_field")
    lateness = float(routing.get("allowed_lateness", 0.0))
    run = _LocalRun(pipeline, result, str(routing["shard_key"]), time_field, lateness,
                    float(routing.get("max_time_jump", 3600.0)),
                    int(routing.get("time_jump_confirm", 100)))
    info = RunInfo(role="local", run_id="testing", output_dir=config.parent,
                   event_time=time_field is not None, ring_span=lateness + 2 * run.tick)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        pipeline.start(info)
        asyncio.run(_drain(source, run))
        run.finish()
    result.stdout = printed.getvalue()
    result.matrices = {mid: np.array(m.Array) for mid, m in app.Matrices.items()}
    if isinstance(sink, TestingSink):
        result.sink = sink.events
    for name in ("windows", "sessions", "anomalies", "sink", "dead_letters", "late_events"):
        setattr(result, name, plain(getattr(result, name)))
    return result
