"""TimeWindowAnalyzer keys without a lifetime cap: rows reused, rings grown, a hard cap.

Each test plays the coordinator for one or more shards the way the runtime does: it
applies every report before merging, and merges as late as flow control allows
(``ring_span`` behind the newest watermark), so a row handed to a new key too early
would show up as a count under the wrong key. Expected windows are counted here from
the input events, not from the analyzer.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bspump
import bspump.common
from bspump.analyzer import TimeWindowAnalyzer
from bspump.batch import EventBatch
from bspump.processor import RestoreInfo
from cluster.checkpoint import ShardReader, ShardWriter
from cluster.config import Config
from cluster.merge import WindowMerger
from cluster.shm import SHM_DIR, Segment, SharedArrays, unlink_run

T0 = 1767225600.0  # a multiple of 60
RES = 60.0
SPAN = 150.0  # ring_span: lateness + max_lag + 2 ticks in a real run


class KeyPipeline(bspump.Pipeline):
    """A source that is never read, one TimeWindowAnalyzer counting field ``k``."""

    def __init__(self, app: Any, pipeline_id: str) -> None:
        super().__init__(app, pipeline_id)
        self.tw = TimeWindowAnalyzer(app, self, window_size=300, resolution=RES)
        self.build(bspump.Source(app, self), self.tw, bspump.common.NullSink(app, self))


@pytest.fixture
def run_ids() -> Iterator[list[str]]:
    """Run ids whose shared memory is removed afterwards."""
    ids: list[str] = []
    yield ids
    for rid in ids:
        unlink_run(rid)


def shard(run_ids: list[str], worker: int = 0, workers: int = 1, **keys: Any) -> KeyPipeline:
    """A started shard-role pipeline (its ring in shared memory) with these analyzer keys."""
    rid = f"{os.getpid()}.keys{len(run_ids)}{os.urandom(2).hex()}"
    run_ids.append(rid)
    text = "[pipeline:P:TimeWindowAnalyzer]\ncount_field = k\n" + "".join(
        f"{k} = {v}\n" for k, v in keys.items())
    run = bspump.RunInfo(role="shard", run_id=rid, worker=worker, workers=workers,
                         ring_span=SPAN, key_groups=16)
    # As a worker's runtime does: the ring goes to shared memory.
    app = bspump.Application(Config.from_string(text, name="keys.ini"), run=run,
                             arrays=SharedArrays(rid, worker))
    p = KeyPipeline(app, "P")
    p.start(run)
    return p


class Coordinator:
    """Applies reports, then merges what every shard closed ``SPAN`` behind the watermark."""

    def __init__(self, shards: list[KeyPipeline]) -> None:
        self.shards = shards
        self.aid = shards[0].tw.Id
        self.merger = WindowMerger(self.aid, RES, len(shards))
        for w, p in enumerate(shards):
            # As the coordinator does with a worker's hello.
            name, shape, dtype = p.App.segment_table()[f"P.{self.aid}.windows"]
            seg = Segment.attach(str(name), tuple(shape), str(dtype))  # type: ignore[arg-type]
            self.merger.attach(w, seg.array, seg)
        self.windows: Counter[tuple[float, Any]] = Counter()
        self.dead: list[dict[str, Any]] = []

    def _collect(self) -> None:
        for w, p in enumerate(self.shards):
            news = p.take_report().get(self.aid)
            if news:
                extra = {k: news[k] for k in ("rows", "segment") if k in news}
                self.merger.report(w, news.get("keys", ()), news.get("closed", ()), **extra)
            self.dead.extend(p.take_dead_letters())

    def _emit(self, watermark: float) -> None:
        for row in self.merger.emit(watermark):
            self.windows[(row["window_start"], row["key"])] += row["count"]

    def advance(self, watermark: float) -> None:
        """Every shard advances and acks; the merge lags as far as flow control lets it."""
        for p in self.shards:
            p.advance(watermark)
        self._collect()
        self._emit(watermark - SPAN)

    def finish(self, last: float) -> None:
        for p in self.shards:
            p.finish(last)
        self._collect()
        self._emit(math.inf)


def expected_windows(events: list[tuple[float, Any]]) -> Counter[tuple[float, Any]]:
    """Counts per (period start, key), counted here from the events."""
    out: Counter[tuple[float, Any]] = Counter()
    for t, k in events:
        out[(math.floor(t / RES) * RES, k)] += 1
    return out


def churn(minutes: int, per_minute: int, seed: int = 3) -> list[tuple[float, Any]]:
    """Short-lived keys: each lives one to three events within two minutes; one steady key."""
    rng = np.random.default_rng(seed)
    events: list[tuple[float, Any]] = []
    for m in range(minutes):
        for j in range(per_minute):
            for _ in range(int(rng.integers(1, 4))):
                events.append((T0 + m * RES + float(rng.uniform(0, 2 * RES)), f"m{m}k{j}"))
        events.append((T0 + m * RES + 1.0, "steady"))
    return events


def feed(coord: Coordinator, events: list[tuple[float, Any]], shard_of: Any = None) -> None:
    """Minute by minute, in time order; the watermark follows each minute."""
    events = sorted(events)
    end = events[-1][0]
    minute = math.floor(events[0][0] / RES)
    i = 0
    while i < len(events):
        upto = (minute + 1) * RES
        batch = [[] for _ in coord.shards]  # type: list[list[tuple[float, Any]]]
        while i < len(events) and events[i][0] < upto:
            t, k = events[i]
            batch[0 if shard_of is None else shard_of(k)].append((t, k))
            i += 1
        for p, part in zip(coord.shards, batch, strict=True):
            if part:
                p.process_batch([t for t, _ in part], [{"k": k} for _, k in part])
        coord.advance(upto - 2 * RES)  # two minutes behind: events of open periods only
        minute += 1
    coord.finish(end)


def test_short_lived_keys_reuse_rows_and_windows_stay_exact(run_ids: list[str]) -> None:
    p = shard(run_ids, max_keys=16)
    coord = Coordinator([p])
    events = churn(minutes=90, per_minute=6)
    feed(coord, events)
    assert coord.dead == []
    assert coord.windows == expected_windows(events)
    distinct = len({k for _, k in events})
    ring = p.tw.window_array
    assert ring is not None
    # 541 keys over the run; at most a few minutes' worth are live at a time.
    assert distinct > 500
    assert ring.shape[1] <= 64


def test_a_full_ring_grows_into_a_new_segment_and_unlinks_the_old(run_ids: list[str]) -> None:
    p = shard(run_ids, max_keys=4)
    coord = Coordinator([p])
    first = p.App.segment_table()["P.TimeWindowAnalyzer.windows"][0]
    events = [(T0 + 10.0 + i * 0.1, f"u{i}") for i in range(50)]
    events += [(T0 + 70.0 + i * 0.1, f"u{i}") for i in range(0, 50, 7)]
    feed(coord, events)
    ring = p.tw.window_array
    assert ring is not None and ring.shape[1] == 64  # 4 -> 8 -> 16 -> 32 -> 64
    now = p.App.segment_table()["P.TimeWindowAnalyzer.windows"][0]
    assert now != first
    assert (SHM_DIR / now).exists()
    assert not (SHM_DIR / first).exists()
    assert coord.dead == []
    assert coord.windows == expected_windows(events)


def test_hard_cap_dead_letters_each_record_it_cannot_place_and_warns_once(
        run_ids: list[str], caplog: pytest.LogCaptureFixture) -> None:
    p = shard(run_ids, max_keys=4, key_limit=8)
    coord = Coordinator([p])
    burst = [(T0 + 5.0 + i, f"b{i}") for i in range(12)]  # 12 keys at once: 4 too many
    burst += [(T0 + 30.0, "b0"), (T0 + 31.0, "b11")]  # b0 has a row, b11 has none
    later = [(T0 + 20 * RES + i, f"c{i}") for i in range(6)]  # rows free again by then
    with caplog.at_level(logging.WARNING):
        feed(coord, burst + later)
    ring = p.tw.window_array
    assert ring is not None and ring.shape[1] == 8
    refused = [d for d in coord.dead if "key_limit" in d["reason"]]
    assert sorted(d["record"]["k"] for d in refused) == ["b10", "b11", "b11", "b8", "b9"]
    assert len(coord.dead) == 5
    assert p.tw.keys_refused == 5
    assert p.events_failed == 5  # the ledger counts each refused record as dead
    warnings = [r for r in caplog.records if "key_limit" in r.getMessage()]
    assert len(warnings) == 1
    placed = [(t, k) for t, k in burst + later if k not in {"b8", "b9", "b10", "b11"}]
    assert coord.windows == expected_windows(placed)


def test_key_limit_below_max_keys_is_a_config_error(run_ids: list[str]) -> None:
    with pytest.raises(Exception, match="key_limit"):
        shard(run_ids, max_keys=16, key_limit=8)


def column_batch(events: list[tuple[float, Any]]) -> EventBatch:
    """Keys ``u<code>`` as a categorical column, the way the generator sends them."""
    codes = np.array([int(k[1:]) for _, k in events], dtype=np.int64)
    return EventBatch(np.array([t for t, _ in events]), {"k": codes}, {"k": "u"})


def test_batch_path_reuses_grows_and_caps_like_count(run_ids: list[str]) -> None:
    p = shard(run_ids, max_keys=8, key_limit=48)
    coord = Coordinator([p])
    rng = np.random.default_rng(9)
    events: list[tuple[float, Any]] = []
    for m in range(60):  # 5 new codes a minute, each used twice within the minute
        for j in range(5):
            code = m * 5 + j
            for _ in range(2):
                events.append((T0 + m * RES + float(rng.uniform(0, RES - 1)), f"u{code}"))
    events.sort()
    burst = [(T0 + 60 * RES + 1 + i * 0.01, f"u{100_000 + i}") for i in range(60)]
    all_events = events + burst
    minute = math.floor(all_events[0][0] / RES)
    i = 0
    while i < len(all_events):
        upto = (minute + 1) * RES
        part = []
        while i < len(all_events) and all_events[i][0] < upto:
            part.append(all_events[i])
            i += 1
        if part:
            p.process_columns(column_batch(part))
        coord.advance(upto - RES)
        minute += 1
    coord.finish(all_events[-1][0])
    ring = p.tw.window_array
    assert ring is not None and ring.shape[1] == 48  # 8 -> 16 -> 32 -> 48
    refused = sorted(d["record"]["k"] for d in coord.dead)
    assert all("key_limit" in d["reason"] for d in coord.dead)
    assert len(refused) == p.tw.keys_refused > 0
    assert p.events_failed == len(refused)  # dead in the ledger too, as on the per-event path
    placed = [(t, k) for t, k in all_events if k not in set(refused)]
    assert len(placed) + len(refused) == len(all_events)
    assert coord.windows == expected_windows(placed)


def open_periods(events: list[tuple[float, Any]], watermark: float) -> Counter[tuple[float, Any]]:
    """Counts of the periods still open at ``watermark``."""
    return Counter({pk: n for pk, n in expected_windows(events).items()
                    if pk[0] + RES > watermark})


def restored_counts(p: KeyPipeline) -> Counter[tuple[float, Any]]:
    """What a restored shard will emit for its open periods."""
    coord = Coordinator([p])
    coord.finish(0.0)
    return coord.windows


@pytest.mark.parametrize("new_workers", [1, 3])
def test_checkpoint_after_reuse_and_growth_restores_exactly(
        run_ids: list[str], tmp_path: Path, new_workers: int) -> None:
    # Two shards churn through keys (rows reused) and one grows; then a checkpoint.
    shards = [shard(run_ids, 0, 2, max_keys=8), shard(run_ids, 1, 2, max_keys=8)]
    coord = Coordinator(shards)
    events = churn(minutes=30, per_minute=5, seed=4)
    events += [(T0 + 29 * RES + 10 + i * 0.1, f"grow{i}") for i in range(40)]
    events.sort()

    def shard_of(k: str) -> int:
        return len(k) % 2

    cut = T0 + 29 * RES
    before = [(t, k) for t, k in events if t < cut + RES]
    watermark = cut - RES
    minute = math.floor(before[0][0] / RES)
    i = 0
    while i < len(before):
        upto = (minute + 1) * RES
        parts: list[list[tuple[float, Any]]] = [[], []]
        while i < len(before) and before[i][0] < upto:
            parts[shard_of(before[i][1])].append(before[i])
            i += 1
        for p, part in zip(shards, parts, strict=True):
            if part:
                p.process_batch([t for t, _ in part], [{"k": k} for _, k in part])
        w = min(upto - 2 * RES, watermark)
        coord.advance(w)
        minute += 1
    widths = [p.tw.window_array.shape[1] for p in shards]  # type: ignore[union-attr]
    assert max(widths) > 8  # a ring grew
    for w, p in enumerate(shards):
        writer = ShardWriter(tmp_path, w)
        p.checkpoint(writer)
        writer.close()
    # Only keys with counts in open periods are written, not every key ever seen.
    live = {k for (_, k) in open_periods(before, watermark)}
    written = set()
    for w in range(2):
        meta = ShardReader(tmp_path, w).get_object("tw.TimeWindowAnalyzer")
        assert meta is not None
        written |= set(meta["keys"])
    assert written == live

    total: Counter[tuple[float, Any]] = Counter()
    for w in range(new_workers):
        p = shard(run_ids, w, new_workers, max_keys=4)
        readers = [ShardReader(tmp_path, old) for old in range(2)]
        p.restore(readers, RestoreInfo(w, new_workers, 2, 16))
        total.update(restored_counts(p))
    assert total == open_periods(before, watermark)


class TickKeys(TimeWindowAnalyzer):
    """Counts 30 new keys at the chosen ticks, in the period that starts at the tick."""

    def __init__(self, app: Any, pipeline: Any) -> None:
        super().__init__(app, pipeline, window_size=300, resolution=RES)
        self.ticks: list[float] = []
        self.count_at: set[float] = set()

    def on_tick(self, tick: float) -> None:
        if tick not in self.count_at:
            return
        self.ticks.append(tick)
        self.Pipeline.event_time = tick
        for j in range(30):
            self.count(f"t{int(tick)}-{j}")


class TickPipeline(KeyPipeline):
    def __init__(self, app: Any, pipeline_id: str) -> None:
        bspump.Pipeline.__init__(self, app, pipeline_id)
        self.tw = TickKeys(app, self)
        self.build(bspump.Source(app, self), self.tw, bspump.common.NullSink(app, self))


def test_keys_counted_in_on_tick_take_no_row_freed_for_data(run_ids: list[str]) -> None:
    # Watermarks may come without the coordinator waiting for its merge (processing
    # time; the end), so a row freed for data after a watermark is not yet free for
    # on_tick: here the merge stalls while two watermarks pass.
    rid = f"{os.getpid()}.ticks{os.urandom(2).hex()}"
    run_ids.append(rid)
    run = bspump.RunInfo(role="shard", run_id=rid, ring_span=SPAN, key_groups=16)
    text = "[pipeline:P:TickKeys]\ncount_field = k\nmax_keys = 8\n"
    p = TickPipeline(bspump.Application(Config.from_string(text, name="t.ini"), run=run,
                                        arrays=SharedArrays(rid, 0)), "P")
    p.start(run)
    coord = Coordinator([p])
    rng = np.random.default_rng(2)
    events = [(T0 + m * RES + float(rng.uniform(0, RES - 1)), f"m{m}k{j}")
              for m in range(21) for j in range(8)]
    events.sort()
    for m in range(21):
        part = [(t, k) for t, k in events if m * RES <= t - T0 < (m + 1) * RES]
        p.process_batch([t for t, _ in part], [{"k": k} for _, k in part])
        coord.advance(T0 + (m + 1) * RES)
    p.tw.count_at = {T0 + 22 * RES, T0 + 23 * RES}
    for m in range(22, 24):  # the merge stalls: reports are applied, nothing is read
        p.advance(T0 + m * RES)
        coord._collect()
    coord._emit(T0 + 23 * RES)  # then catches up (before a tick reuses a slot it must read)
    coord.finish(T0 + 23 * RES)
    assert coord.dead == []
    expected = expected_windows(events)
    assert p.tw.ticks == sorted(p.tw.count_at)
    for tick in p.tw.ticks:
        for j in range(30):
            expected[(math.floor(tick / RES) * RES, f"t{int(tick)}-{j}")] += 1
    assert coord.windows == expected
