"""Each partition task's figures, read from its checkpoints, and how a member shows them.

A partition task writes its counters, its offset and its watermark into every
checkpoint manifest; on storage that every host mounts, any host (or
``bspump-cluster status``) reads them back from there. A host's member shows its own
partitions' figures as a log line every so often and as Prometheus text.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Any

from cluster import checkpoint
from cluster.config import ClusterSettings, parse_partition
from cluster.prometheus import Exposition
from cluster.records import partition_name

log = logging.getLogger("bspump-cluster.member")

# A partition's folder, as cluster.config.partition_folder names it: ``events:3`` -> ``events-3``.
_FOLDER = re.compile(r"^(?P<topic>.+)-(?P<number>\d+)$")


def partition_checkpoint_dirs(settings: ClusterSettings) -> dict[str, Path]:
    """``topic:N`` -> checkpoint folder of every partition that has one in the shared location."""
    found: dict[str, Path] = {}
    shared = settings.checkpoint_dir_set and settings.checkpoint_dir is not None
    root = settings.checkpoint_dir if shared else settings.output_dir
    assert root is not None
    if not root.is_dir():
        return found
    for folder in sorted(root.iterdir()):
        m = _FOLDER.match(folder.name)
        if m is None or not folder.is_dir():
            continue
        cp_dir = folder if shared else folder / "checkpoints"
        if cp_dir.is_dir():
            found[partition_name(m["topic"], int(m["number"]))] = cp_dir
    return found


def partition_offset(position: Any, partition: str) -> Any:
    """A partition's offset in a manifest's position (offsets by partition), or None."""
    return position.get(partition) if isinstance(position, dict) else None


def partition_status(partition: str, cp_dir: Path, now: float | None = None) -> dict[str, Any]:
    """One partition's figures from its two newest complete checkpoints."""
    now = time.time() if now is None else now
    manifests = checkpoint.complete_manifests(cp_dir, 2)
    row: dict[str, Any] = {"partition": partition, "checkpoint_id": None}
    if not manifests:
        return row
    m = manifests[0]
    c = m.counters
    watermark = m.intake.watermark
    row.update({
        "checkpoint_id": m.id, "owner": m.owner,
        "finished": m.finished,
        "offset": partition_offset(m.position, partition),
        "records_read": c.records_read, "events_processed": c.events_processed,
        "dead_letters": c.dead, "late_events": c.late,
        "watermark": watermark if math.isfinite(watermark) else None,
        "checkpoint_age_s": round(now - (now if m.created is None else m.created), 3),
        "records_per_s": None,
    })
    if len(manifests) == 2:
        old = manifests[1]
        dt = (m.created or 0) - (old.created or 0)
        if dt > 0:
            read = c.records_read - old.counters.records_read
            row["records_per_s"] = round(read / dt, 1)
    return row


def report(rows: list[dict[str, Any]]) -> None:
    """Log a host's partitions: records read and rate, lag, dead and late events."""
    rows = [r for r in rows if r["checkpoint_id"] is not None]
    if not rows:
        return
    lags = [r["lag"] for r in rows if r["lag"] is not None]
    rate = sum(r["records_per_s"] or 0 for r in rows if not r["finished"])
    # The fields are the message's own words (grouped digits), as they have always been.
    fields = {
        "partitions": ", ".join(r["partition"] for r in rows),
        "records_read": f"{sum(r['records_read'] or 0 for r in rows):,}",
        "records_per_s": f"{rate:,.0f}",
        "lag": f"{sum(lags):,}" if lags else "-",
        "dead_letters": f"{sum(r['dead_letters'] or 0 for r in rows):,}",
        "late_events": f"{sum(r['late_events'] or 0 for r in rows):,}",
        "checkpoint_age_s": f"{max(r['checkpoint_age_s'] for r in rows):.0f}",
    }
    log.info("partitions %(partitions)s: %(records_read)s records read (%(records_per_s)s/s), "
             "%(lag)s behind the end, %(dead_letters)s dead letters, %(late_events)s late; "
             "checkpoints %(checkpoint_age_s)s s old", fields,
             extra={"event": "partitions_report", **fields})


_PARTITION_METRICS = [  # name, type, row key, help
    ("partition_records_read_total", "counter", "records_read",
     "Records read from the partition, as of its newest checkpoint."),
    ("partition_offset", "gauge", "offset", "Offset of the partition's newest checkpoint."),
    ("partition_lag", "gauge", "lag",
     "Messages between the newest checkpoint's offset and the partition's end."),
    ("partition_dead_letters_total", "counter", "dead_letters",
     "Dead letters of the partition, as of its newest checkpoint."),
    ("partition_late_events_total", "counter", "late_events",
     "Late events of the partition, as of its newest checkpoint."),
    ("partition_watermark_seconds", "gauge", "watermark",
     "The partition's watermark at its newest checkpoint (epoch seconds)."),
    ("partition_checkpoint_age_seconds", "gauge", "checkpoint_age_s",
     "Seconds since the partition's newest checkpoint (when last read)."),
    ("partition_finished", "gauge", "finished",
     "1 when the partition's task reached its end (stop_at_end)."),
]


def render_metrics(snap: dict[str, Any]) -> str:
    """A member's snapshot in the Prometheus text format."""
    t = Exposition(pipeline=snap["pipeline"], member=snap["member"])
    rows = snap["partitions"]
    t.metric("member_info", "gauge", "Always 1; the group and state are its labels.",
             [({"group": snap["group"], "state": snap["state"]}, 1)])
    t.metric("member_partitions", "gauge", "Partitions this host owns.", [({}, len(rows))])
    t.metric("member_rebalances_total", "counter", "Partition assignments this host received.",
             [({}, snap["rebalances"])])
    t.metric("member_tasks_started_total", "counter", "Partition tasks this host started.",
             [({}, snap["tasks_started"])])

    def each(key: str) -> list[tuple[dict[str, Any], float | None]]:
        samples = []
        for r in rows:
            topic, number = parse_partition(r["partition"])
            value = r.get(key)
            samples.append(({"topic": topic, "partition": str(number)},
                             float(value) if isinstance(value, bool) else value))
        return samples

    for name, kind, key, help_text in _PARTITION_METRICS:
        t.metric(name, kind, help_text, each(key))
    return t.text()
