"""The run's figures in the Prometheus text format (``/metrics``).

Built from :meth:`coordinator.status.Status.snapshot`, the one dict that the
progress line, ``/metrics``, ``bspump-cluster status`` and the live page all read.
Names follow Prometheus conventions (see :mod:`cluster.prometheus`).
"""

from __future__ import annotations

from typing import Any

from cluster.config import parse_partition
from cluster.prometheus import Exposition


def render(snap: dict[str, Any]) -> str:
    """The Prometheus text exposition of a snapshot."""
    t = Exposition(pipeline=snap["pipeline"])
    workers = snap["workers"]
    t.metric("info", "gauge", "Always 1; the run id and state are its labels.",
             [({"run_id": snap.get("run_id", ""), "state": snap.get("state", "")}, 1)])
    t.metric("workers", "gauge", "Worker processes of the run.", [({}, len(workers))])
    t.metric("events_in_total", "counter", "Records read from the source.",
             [({}, snap["records_read"])])
    t.metric("events_per_second", "gauge", "Records read per second over the last seconds.",
             [({}, snap["events_per_s"])])
    t.metric("worker_events_in_total", "counter", "Events sent to each worker.",
             [({"worker": w["worker"]}, w["events_in"]) for w in workers])
    t.metric("worker_events_out_total", "counter",
             "Events each worker processed (acknowledged).",
             [({"worker": w["worker"]}, w["events_out"]) for w in workers])
    t.metric("worker_events_per_second", "gauge", "Events each worker processed per second.",
             [({"worker": w["worker"]}, w["events_per_s"]) for w in workers])
    t.metric("worker_queue_depth", "gauge",
             "Events sent to a worker and not yet acknowledged by it.",
             [({"worker": w["worker"]}, w["queue_depth"]) for w in workers])
    t.metric("worker_open_sessions", "gauge", "Open sessions on each worker.",
             [({"worker": w["worker"]}, w["open_sessions"]) for w in workers])
    t.metric("worker_key_groups", "gauge", "Key groups each worker owns.",
             [({"worker": w["worker"]}, w["key_groups"][1] - w["key_groups"][0] + 1)
              for w in workers])
    t.metric("watermark_seconds", "gauge",
             "Watermark (epoch seconds; NaN before the first event).",
             [({}, snap["watermark"])])
    t.metric("watermark_lag_seconds", "gauge", "Wall clock minus the watermark.",
             [({}, snap["watermark_lag_s"])])
    ledger = snap.get("ledger") or {}
    if ledger:
        t.metric("records_total", "counter",
                 "Records read, by where each ended: processed, late or dead (a dead letter).",
                 [({"outcome": k}, ledger[k]) for k in ("processed", "late", "dead")])
        t.metric("records_in_flight", "gauge",
                 "Records routed to a worker and not yet reported back as processed.",
                 [({}, ledger["in_flight"])])
    found = snap.get("anomalies") or {}
    if found:
        t.metric("anomalies_total", "counter",
                 "Anomalies found, per analyzer (merged windows or a keyed detector).",
                 [({"analyzer": aid}, n) for aid, n in sorted(found.items())])
    t.metric("dead_letters_total", "counter", "Lines in dead-letters.jsonl.",
             [({}, snap["dead_letters"])])
    t.metric("late_events_total", "counter", "Events behind the watermark (late-events.jsonl).",
             [({}, snap["late_events"])])
    t.metric("window_rows_total", "counter", "Merged window rows written.",
             [({}, snap["window_rows"])])
    t.metric("sessions_ended_total", "counter", "Sessions ended and written.",
             [({}, snap["sessions_ended"])])
    cp = snap["checkpoint"]
    t.metric("checkpoints_total", "counter", "Checkpoints completed by this process.",
             [({}, cp["taken"])])
    t.metric("last_checkpoint_id", "gauge",
             "Id of the newest checkpoint this process completed (NaN: none yet).",
             [({}, cp["last_id"])])
    t.metric("last_checkpoint_age_seconds", "gauge", "Seconds since the newest checkpoint.",
             [({}, cp["age_s"])])
    t.metric("last_checkpoint_duration_seconds", "gauge", "How long the newest checkpoint took.",
             [({}, cp["duration_s"])])
    t.metric("last_checkpoint_stall_seconds", "gauge",
             "How long routing stood still for the newest checkpoint (barrier to resume).",
             [({}, cp.get("stall_s"))])
    t.metric("last_checkpoint_worker_write_seconds", "gauge",
             "The longest a worker stood still writing its state for the newest checkpoint.",
             [({}, cp.get("worker_write_s"))])
    t.metric("last_checkpoint_bytes", "gauge", "Bytes the newest checkpoint wrote.",
             [({}, cp.get("bytes"))])
    t.metric("state_bytes", "gauge", "Bytes of the whole state at the newest checkpoint.",
             [({}, cp.get("state_bytes"))])
    t.metric("worker_restarts_total", "counter",
             "Times the run was restarted from a checkpoint after a process died.",
             [({}, snap["restarts"])])
    lag = snap.get("kafka_lag") or {}
    if lag:
        samples = []
        for name, value in sorted(lag.items()):
            topic, number = parse_partition(name)
            samples.append(({"topic": topic, "partition": str(number)}, value))
        t.metric("kafka_consumer_lag", "gauge",
                 "Messages between the source's position and the partition's end.", samples)
    t.metric("uptime_seconds", "gauge", "Seconds since the coordinator started.",
             [({}, snap["uptime_s"])])
    return t.text()
