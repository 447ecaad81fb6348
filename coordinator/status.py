"""The run's figures: the snapshot, the summary, rates, the progress line, warnings.

:meth:`Status.snapshot` is the one record (:class:`cluster.figures.Snapshot`) that
``/metrics`` (:mod:`coordinator.metrics`), ``/api/snapshot``, ``bspump-cluster status``,
the live page and ``report.html`` (:mod:`coordinator.web`) all read;
:meth:`Status.summary` is ``summary.json`` (:class:`cluster.figures.Summary`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import deque
from typing import Any

import numpy as np

from bspump.application import RunInfo
from cluster import exits
from cluster.figures import CheckpointStatus, HistorySample, Snapshot, Summary, WorkerFigures
from cluster.intake import Intake
from cluster.layout import Layout
from cluster.logs import text_prefix
from cluster.outputs import RunOutputs
from coordinator.checkpoints import Checkpoints
from coordinator.ledger import Counts, Ledger
from coordinator.liveness import Liveness
from coordinator.merge import Merger
from coordinator.router import Router
from coordinator.watermark import fmt_time

log = logging.getLogger("bspump-cluster.coordinator")

HISTORY = 600  # seconds of throughput kept for the page
WARNINGS = 10  # warnings kept for the page


class Warnings:
    """Warnings for the log and for the page (the newest few are in the snapshot)."""

    def __init__(self, keep: int = WARNINGS) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)

    def warn(self, message: str, *args: Any, extra: dict[str, Any] | None = None) -> None:
        """Log ``message % args`` as a warning (with ``extra``'s fields) and keep it."""
        log.warning(message, *args, extra=extra)
        self.recent.append({"time": time.time(), "message": message % args})


class Status:
    """What the run did so far, for people (progress, summary) and programs (snapshot)."""

    def __init__(self, pipeline_id: str, run_info: RunInfo, layout: Layout, intake: Intake,
                 outputs: RunOutputs, counts: Counts, liveness: Liveness, router: Router,
                 merger: Merger, checkpoints: Checkpoints, warnings: Warnings,
                 restarts: int, show_progress: bool) -> None:
        self.pipeline_id = pipeline_id
        self.run_info = run_info
        self.layout = layout
        self.intake = intake
        self.outputs = outputs
        self.counts = counts
        self.liveness = liveness
        self.router = router
        self.merger = merger
        self.checkpoints = checkpoints
        self.warnings = warnings
        self.restarts = restarts
        self.show_progress = show_progress
        self.workers = counts.workers
        self.state = "starting"
        self.started = time.monotonic()
        self.kafka_lag: dict[str, int] = {}
        # (monotonic, wall clock, records read, per worker processed, per worker sessions)
        self.history: deque[tuple[float, float, int, list[int], list[int]]] = deque(
            maxlen=HISTORY)

    def ledger(self) -> Ledger:
        """Where every record read went so far (see :mod:`coordinator.ledger`)."""
        return self.counts.ledger(held=len(self.intake.jumps.held))

    def sample(self) -> None:
        """Note this second's counts (the page's throughput history, the rates)."""
        c = self.counts
        self.history.append((time.monotonic(), time.time(), c.records_read,
                             list(c.processed), list(c.open_sessions)))

    def rates(self, span: float = 5.0) -> tuple[float, list[float]]:
        """Records/s read and events/s per worker over the last ``span`` seconds."""
        if len(self.history) < 2:
            return 0.0, [0.0] * self.workers
        t1, _, n1, w1, _ = self.history[-1]
        t0, _, n0, w0, _ = self.history[0]
        for sample in reversed(self.history):
            if t1 - sample[0] >= span:
                t0, _, n0, w0, _ = sample
                break
        dt = max(t1 - t0, 1e-9)
        return (n1 - n0) / dt, [(b - a) / dt for a, b in zip(w0, w1, strict=True)]

    def print_progress(self) -> None:
        """The progress line on stderr, overwritten in place."""
        rate, per = self.rates()
        workers = "  ".join(f"w{w} {r:,.0f}/s" for w, r in enumerate(per))
        last = self.checkpoints.last
        cp = f"  checkpoint {last.id}" if last else ""
        sys.stderr.write(f"\r\x1b[K{self.counts.records_read:,} events  {rate:,.0f}/s  "
                         f"{workers}  watermark {fmt_time(self.intake.watermark)}{cp}")
        sys.stderr.flush()

    def print_output(self, text: str) -> None:
        """A worker's printed lines on stdout, below the progress line."""
        if self.show_progress:
            sys.stderr.write("\r\x1b[K")
        sys.stdout.write(text)
        sys.stdout.flush()

    def matrix_view(self, mid: str, max_cells: int = 200 * 200) -> dict[str, Any]:
        """A merged matrix for the page: 2-D, summed into blocks when larger than max_cells."""
        total = self.merger.summed(mid)
        data = total.reshape(total.shape[0], -1) if total.ndim != 2 else total
        rows, cols = data.shape
        step = max(1, math.ceil(math.sqrt(rows * cols / max_cells)))
        if step > 1:
            r2, c2 = -(-rows // step) * step, -(-cols // step) * step
            padded = np.zeros((r2, c2), dtype=np.float64)
            padded[:rows, :cols] = data
            data = padded.reshape(r2 // step, step, c2 // step, step).sum(axis=(1, 3))
        return {"id": mid, "shape": list(total.shape), "block": step,
                "sum": float(total.sum()), "max": float(data.max()) if data.size else 0.0,
                "data": np.asarray(data, dtype=np.float64).round(3).tolist()}

    def snapshot(self) -> Snapshot:
        """Every figure of the running cluster, for /metrics, status, the page, the report."""
        rate, per = self.rates()
        now = time.time()
        c = self.counts
        watermark = self.intake.watermark if math.isfinite(self.intake.watermark) else None
        quiet = self.liveness.silent_s()
        states = self.liveness.states()
        workers = [WorkerFigures(
            worker=w, events_in=c.sent[w], events_out=c.processed[w],
            pid=self.liveness.pids[w], silent_s=round(quiet[w], 1),
            state=states[w],
            events_per_s=round(per[w], 1),
            queue_depth=max(0, c.sent[w] - c.processed[w]),
            open_sessions=c.open_sessions[w],
            key_groups=[self.layout.groups_of(w).start, self.layout.groups_of(w).stop - 1])
            for w in range(self.workers)]
        cp = self.checkpoints.last
        return Snapshot(
            pipeline=self.pipeline_id,
            run_id=self.run_info.run_id,
            state=self.state,
            time=now,
            uptime_s=round(time.monotonic() - self.started, 3),
            event_time=self.run_info.event_time,
            records_read=c.records_read,
            events_per_s=round(rate, 1),
            workers=workers,
            watermark=watermark,
            watermark_lag_s=None if watermark is None else round(now - watermark, 3),
            dead_letters=c.dead,
            late_events=c.late,
            ledger=self.ledger().as_dict(),
            time_jumps=self.intake.jumps.counts(),
            warnings=list(self.warnings.recent),
            anomalies=self.merger.anomaly_counts(),
            recent_anomalies=list(self.merger.recent_anomalies),
            window_rows=c.window_rows,
            sessions_ended=c.sessions_ended,
            restarts=self.restarts,
            kafka_lag=dict(self.kafka_lag),
            checkpoint=CheckpointStatus(
                taken=self.checkpoints.taken, last_id=cp.id if cp else None,
                age_s=round(now - cp.at, 3) if cp else None,
                duration_s=cp.duration_s if cp else None,
                stall_s=cp.stall_s if cp else None,
                worker_write_s=cp.worker_write_s if cp else None,
                bytes=cp.bytes if cp else None,
                state_bytes=cp.state_bytes if cp else None,
                enabled=self.checkpoints.dir is not None),
            checkpoints=list(self.checkpoints.history),
            history=[HistorySample(t=wall, records_read=n, workers=list(w),
                                   open_sessions=list(sessions))
                     for _, wall, n, w, sessions in self.history],
            windows={aid: list(h) for aid, h in self.merger.window_history.items()},
            matrices=[self.matrix_view(mid) for mid in self.merger.matrices],
        )

    def summary(self, rc: int) -> Summary:
        """Figures of the run, as written to ``summary.json``."""
        elapsed = time.monotonic() - self.started
        c = self.counts
        return Summary(
            pipeline=self.pipeline_id,
            workers=self.workers,
            exit_code=rc,
            elapsed_s=round(elapsed, 3),
            records_read=c.records_read,
            events_routed=sum(c.sent),
            events_per_s=round(c.records_read / elapsed, 1) if elapsed > 0 else None,
            dead_letters=c.dead,
            late_events=c.late,
            per_worker_events=list(c.processed),
            events_processed=c.handled(),
            events_batch_path=sum(c.batched),
            restored_from_checkpoint=self.checkpoints.restored_from,
            checkpoints_taken=self.checkpoints.taken,
            last_checkpoint=self.checkpoints.last,
            window_rows=c.window_rows,
            sessions_ended=c.sessions_ended,
            watermark=self.intake.watermark if math.isfinite(self.intake.watermark) else None,
            source_position=self.router.position,
            ledger=self.ledger().as_dict(),
            time_jumps=self.intake.jumps.counts(),
            anomalies=self.merger.anomaly_counts(),
            result_files=self.outputs.sizes(),
        )

    def finish(self, rc: int) -> None:
        """Write ``summary.json`` and print the run's figures on stderr."""
        s = self.summary(rc)
        try:
            self.outputs.write_summary(s.to_dict())
        except OSError as e:
            log.error("cannot write summary: %s", e,
                      extra={"event": "summary_failed", "error": str(e)})
        if self.show_progress:
            sys.stderr.write("\r\x1b[K")
        c = self.counts
        state = "finished" if rc == exits.OK else ("stopped" if rc == exits.STOPPED else "FAILED")
        ledger = self.ledger()
        mark = "closes" if ledger.closes else (
            "does NOT close" if rc in (exits.OK, exits.LEDGER) else "open: the run stopped")
        out = self.outputs.dir
        lines = [
            f"{text_prefix('coordinator')}{state} in {s.elapsed_s:.2f} s, "
            f"{self.workers} workers",
            f"  events read   {s.records_read:>12,}  ({s.events_per_s or 0:,.0f}/s)",
            f"  dead letters  {c.dead:>12,}" + (f"  -> {out / 'dead-letters.jsonl'}"
                                               if c.dead else ""),
            f"  late events   {c.late:>12,}" + (f"  -> {out / 'late-events.jsonl'}"
                                               if c.late else ""),
            *(f"  worker {w:<6} {n:>12,} events" for w, n in enumerate(c.processed)),
            f"  ledger        {ledger.equation()}  ({mark})",
            f"  window rows   {c.window_rows:>12,}   sessions ended {c.sessions_ended:,}",
            f"  results in {out}",
        ]
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
