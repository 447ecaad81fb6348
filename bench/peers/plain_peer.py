"""The floor: the benchmark's windows and sessions as one plain Python loop.

    python plain_peer.py --input EVENTS.jsonl --out DIR [--resolution 60] [--session-gap 1800]

Reads the file line by line, ``json.loads`` each line, counts events per (period, type)
in a dict and keeps one open session per user (a gap over ``--session-gap`` seconds ends
it). No framework, no event-time bookkeeping beyond that: what a single process can do at
best with the same parsing. Its output is also the reference every system is checked
against. Writes ``DIR/windows.jsonl``, ``DIR/sessions.jsonl`` and ``DIR/summary.json``
(``records_read``, ``elapsed_s`` from opening the file to the last row written).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path


def run(path: Path, out: Path, resolution: float, gap: float) -> dict[str, float]:
    """One pass over ``path``; returns the summary."""
    began = time.perf_counter()
    counts: dict[tuple[int, str], int] = {}
    sessions: dict[str, list] = {}
    ended: list[tuple[str, float, float, int]] = []
    records = 0
    loads = json.loads
    floor = math.floor
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            event = loads(line)
            records += 1
            t = event["timestamp"]
            key = (floor(t / resolution), event["type"])
            counts[key] = counts.get(key, 0) + 1
            user = event["user_id"]
            s = sessions.get(user)
            if s is None:
                sessions[user] = [t, t, 1]
            elif t - s[1] > gap:
                ended.append((user, s[0], s[1], s[2]))
                sessions[user] = [t, t, 1]
            else:
                if t > s[1]:
                    s[1] = t
                if t < s[0]:
                    s[0] = t
                s[2] += 1
    ended.extend((user, s[0], s[1], s[2]) for user, s in sessions.items())
    with open(out / "windows.jsonl", "w") as f:
        for (period, kind), n in sorted(counts.items()):
            start = period * resolution
            f.write(json.dumps({"window_start": start, "window_end": start + resolution,
                                "key": kind, "count": n}) + "\n")
    with open(out / "sessions.jsonl", "w") as f:
        for user, first, last, n in ended:
            f.write(json.dumps({"key": user, "start": first, "end": last, "events": n}) + "\n")
    return {"records_read": records, "elapsed_s": round(time.perf_counter() - began, 3),
            "window_rows": len(counts), "sessions_ended": len(ended)}


def main() -> int:
    """Run once over ``--input`` and write the results to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--resolution", type=float, default=60.0)
    ap.add_argument("--session-gap", type=float, default=1800.0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary = run(args.input, args.out, args.resolution, args.session_gap)
    (args.out / "summary.json").write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
