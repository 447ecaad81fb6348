"""The benchmark pipeline written in the API of the original BSPump 21.11 (runs on Python 3.7).

    python bspump_peer.py --input EVENTS.jsonl --out DIR [--resolution 60] [--session-gap 1800]

A real ``BSPumpApplication``: ``FileLineSource`` (triggered once by ``RunOnceTrigger``,
as BSPump's own file examples do) -> ``StdJsonToDictParser`` -> a ``TimeWindowAnalyzer``
counting events per type in 60 s columns of event time -> a ``SessionAnalyzer`` keeping
(count, first, last) per user with the 1800 s gap rule -> ``NullSink``. Writes
``DIR/windows.jsonl`` (``{window_start, window_end, key, count}``, one row per type and
column, written as a column closes), ``DIR/sessions.jsonl`` (``{key, start, end,
events}``) and ``DIR/summary.json`` (``records_read``, ``elapsed_s`` from the start of the
source's cycle to the last row written).

BSPump 21.11 specifics this has to deal with:

- ``TimeWindowMatrix`` starts at ``start_time`` (default: the wall clock) and counts an
  event older than its last column as late, so in event time it is built with the first
  event's timestamp (read from the file's first line before the pipeline starts).
- ``TimeWindowMatrix.advance(ts)`` shifts columns out without reporting them, so the
  analyzer writes every column whose end has passed before it advances.
- ``FileABCSource`` renames its file while reading (``-locked``), so the source reads a
  hard link in a temporary folder, never the shared input file; its default
  ``event_idle_time`` sleeps 10 ms every 10,000 lines, set to 0 here (a plain yield).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time

import bspump.trigger
import numpy as np

import bspump
import bspump.analyzer
import bspump.common
import bspump.file

COLUMNS = 60  # one hour of 60 s columns, as the spec's HourlyCountAnalyzer keeps


class TypeCountAnalyzer(bspump.analyzer.TimeWindowAnalyzer):
    """Events per type in ``resolution``-second columns of event time (one matrix row per type).

    A column is written once the event time has passed its end (the input is in
    timestamp order); the rest at :meth:`flush`.
    """

    def __init__(self, app: bspump.BSPumpApplication, pipeline: bspump.Pipeline,
                 start_time: float, resolution: float, out: object,
                 id: str | None = None, config: dict | None = None) -> None:
        super().__init__(app, pipeline, dtype="i8", columns=COLUMNS, resolution=resolution,
                         start_time=start_time, clock_driven=False, id=id, config=config)
        self.Resolution = float(resolution)
        self.Out = out
        self.NextClose = math.floor(start_time / resolution) * resolution
        self.RowsWritten = 0
        self.Events = 0

    def evaluate(self, context: dict, event: dict) -> None:
        """Count the event under its type in the column of its timestamp."""
        self.Events += 1
        ts = event["timestamp"]
        if ts >= self.NextClose + self.Resolution:
            self.write_closed(ts)
        self.TimeWindow.advance(ts)
        column = self.TimeWindow.get_column(ts)
        if column is None:
            raise ValueError(f"event at {ts} is outside the time window")
        row = self.TimeWindow.get_row_index(event["type"])
        if row is None:
            row = self.TimeWindow.add_row(event["type"])
        self.TimeWindow.Array[row, column] += 1

    def write_closed(self, until: float) -> None:
        """Write every column that ends at or before ``until`` and has not been written."""
        tw = self.TimeWindow
        res = self.Resolution
        end = tw.TimeConfig.get_end()
        start = tw.TimeConfig.get_start()
        period = self.NextClose
        while period + res <= until and period < start:
            column = int((period - end) // res)
            if 0 <= column < tw.Array.shape[1]:
                counts = tw.Array[:, column]
                for row in np.nonzero(counts)[0].tolist():
                    name = tw.get_row_name(row)
                    if name is None:
                        continue
                    self.Out.write(json.dumps({"window_start": period,
                                               "window_end": period + res, "key": name,
                                               "count": int(counts[row])}) + "\n")
                    self.RowsWritten += 1
            period += res
        self.NextClose = period

    def flush(self) -> None:
        """End of input: write the columns still open."""
        self.write_closed(self.TimeWindow.TimeConfig.get_start())


class UserSessionAnalyzer(bspump.analyzer.SessionAnalyzer):
    """Per-user sessions (count, first, last); a gap over ``gap`` seconds starts a new one."""

    def __init__(self, app: bspump.BSPumpApplication, pipeline: bspump.Pipeline, gap: float,
                 out: object, id: str | None = None, config: dict | None = None) -> None:
        super().__init__(app, pipeline,
                         dtype=[("count", "i8"), ("first", "f8"), ("last", "f8")],
                         id=id, config=config)
        self.Gap = float(gap)
        self.Out = out
        self.Ended = 0

    def evaluate(self, context: dict, event: dict) -> None:
        """Add the event to its user's open session, or end that session and open another."""
        user = event["user_id"]
        ts = event["timestamp"]
        sessions = self.Sessions
        row = sessions.get_row_index(user)
        if row is not None and ts - sessions.Array["last"][row] > self.Gap:
            self.end_session(user, row)
            row = None
        if row is None:
            row = sessions.add_row(user)
            sessions.Array[row] = (1, ts, ts)
            return
        array = sessions.Array
        array["count"][row] += 1
        if ts > array["last"][row]:
            array["last"][row] = ts
        if ts < array["first"][row]:
            array["first"][row] = ts

    def end_session(self, user: str, row: int) -> None:
        """Write the session of ``user`` (at ``row``) and free its row."""
        s = self.Sessions.decode_row(row)
        self.Out.write(json.dumps({"key": user, "start": float(s["first"]),
                                   "end": float(s["last"]), "events": int(s["count"])}) + "\n")
        self.Ended += 1
        self.Sessions.close_row(user)

    def flush(self) -> None:
        """End of input: every open session ends."""
        # Closing rows may compact the matrix and renumber rows: look each one up anew.
        for user in list(self.Sessions.Index.N2IMap):
            self.end_session(user, self.Sessions.get_row_index(user))


class BenchPipeline(bspump.Pipeline):
    """File lines -> JSON -> per-type window counts -> per-user sessions -> nowhere."""

    def __init__(self, app: bspump.BSPumpApplication, pipeline_id: str, path: str,
                 start_time: float, resolution: float, gap: float, windows: object,
                 sessions: object) -> None:
        super().__init__(app, pipeline_id)
        self.Windows = TypeCountAnalyzer(app, self, start_time, resolution, windows)
        self.SessionsAnalyzer = UserSessionAnalyzer(app, self, gap, sessions)
        self.build(
            bspump.file.FileLineSource(app, self, config={
                "path": path, "post": "noop", "event_idle_time": 0,
            }).on(bspump.trigger.RunOnceTrigger(app)),
            bspump.common.StdJsonToDictParser(app, self),
            self.Windows,
            self.SessionsAnalyzer,
            bspump.common.NullSink(app, self),
        )


def run_pipeline(path: str, start_time: float, args: argparse.Namespace, windows: object,
                 sessions: object) -> bool:
    """Run the application until the source has read ``path`` once; True if no error."""
    clock = {"t0": 0.0}
    failed = []
    app = bspump.BSPumpApplication(args=[])
    svc = app.get_service("bspump.PumpService")
    pipeline = BenchPipeline(app, "BenchPipeline", path, start_time, args.resolution,
                             args.session_gap, windows, sessions)
    svc.add_pipeline(pipeline)

    def on_begin(message: str, pipeline: bspump.Pipeline) -> None:
        clock["t0"] = time.perf_counter()

    def on_end(message: str, pipeline: bspump.Pipeline) -> None:
        # The source has read the whole file (processing is synchronous): close everything.
        pipeline.Windows.flush()
        pipeline.SessionsAnalyzer.flush()
        windows.close()
        sessions.close()
        elapsed = time.perf_counter() - clock["t0"]
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump({"records_read": pipeline.Windows.Events,
                       "elapsed_s": round(elapsed, 3),
                       "window_rows": pipeline.Windows.RowsWritten,
                       "sessions_ended": pipeline.SessionsAnalyzer.Ended}, f)

    def on_error(message: str, pipeline: bspump.Pipeline) -> None:
        failed.append(pipeline.Id)
        app.stop()

    pipeline.PubSub.subscribe("bspump.pipeline.cycle_begin!", on_begin)
    pipeline.PubSub.subscribe("bspump.pipeline.cycle_end!", on_end)
    pipeline.PubSub.subscribe("bspump.pipeline.error!", on_error)
    app.run()  # RunOnceTrigger stops the application after the one cycle
    return not failed


def main() -> int:
    """Run the pipeline over ``--input`` once and write the results to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--resolution", type=float, default=60.0)
    ap.add_argument("--session-gap", type=float, default=1800.0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(args.input, "rb") as f:
        first = f.readline()
    if not first.strip():
        sys.exit(f"empty input: {args.input}")
    start_time = json.loads(first)["timestamp"]

    work = tempfile.mkdtemp(prefix="bspump-peer-")
    link = os.path.join(work, os.path.basename(args.input))
    try:
        try:
            os.link(os.path.abspath(args.input), link)
        except OSError:
            shutil.copyfile(args.input, link)
        with open(os.path.join(args.out, "windows.jsonl"), "w") as windows, \
                open(os.path.join(args.out, "sessions.jsonl"), "w") as sessions:
            ok = run_pipeline(link, start_time, args, windows, sessions)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not ok or not os.path.exists(os.path.join(args.out, "summary.json")):
        print("bspump peer: the pipeline stopped with an error", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
