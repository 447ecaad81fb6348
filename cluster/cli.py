"""``bspump-cluster``: run a config on every core, print its shard layout and status."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cluster import checkpoint, exits, logs, supervisor
from cluster.config import ClusterSettings, Config, load_cluster_settings, parse_partition
from cluster.errors import ClusterError, ConfigError
from cluster.figures import decode_snapshot
from cluster.layout import Layout


def _settings(args: argparse.Namespace) -> ClusterSettings:
    cfg = Config.load(args.config)
    return load_cluster_settings(cfg, Path(args.config), workers=getattr(args, "workers", None),
                                 output_dir=getattr(args, "output_dir", None),
                                 partition=getattr(args, "partition", None))


log = logging.getLogger("bspump-cluster")

STATUS_TIMEOUT = 5.0


def cmd_run(args: argparse.Namespace) -> int:
    """Start the coordinator and the workers; wait for the end of the input."""
    settings = _settings(args)
    if settings.tasks == "partition" and settings.partition is None:
        from cluster import member

        if args.fresh:
            raise ConfigError("--fresh with tasks = partition: other hosts may be using "
                              f"{settings.checkpoint_dir}; remove it by hand when none runs")
        rc = member.run(settings, in_process=args.in_process)
    else:
        rc = supervisor.run(settings, in_process=args.in_process, fresh=args.fresh)
    outcome = exits.outcome(rc)
    log.info("run ended: %s (exit code %d)", outcome, rc,
             extra={"event": "stop", "outcome": outcome, "exit_code": rc})
    return rc


def _status_url(host: str, port: int) -> str:
    """Where a local client reaches the coordinator (a wildcard address is this host)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def fetch_snapshot(url: str, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
    """GET ``url``/api/snapshot; raise ClusterError when nothing (sensible) answers."""
    try:
        with urllib.request.urlopen(f"{url}/api/snapshot", timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        raise ClusterError(f"{url}/api/snapshot answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ClusterError(f"nothing answers at {url}/ ({reason}): is the cluster running?") \
            from None
    try:
        snap = json.loads(body)
    except ValueError:
        raise ClusterError(f"{url}/api/snapshot did not answer JSON: is it bspump-cluster?") \
            from None
    if not isinstance(snap, dict) or "workers" not in snap:
        raise ClusterError(f"{url}/api/snapshot did not answer a cluster snapshot")
    decode_snapshot(snap, f"{url}/api/snapshot")  # ContractError naming a field it lacks
    return snap


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _iso(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_seconds(s: float | None) -> str:
    """``0.4 s``, ``12 s``, ``5.0 min``, ``3.2 h``, ``331 d``."""
    if s is None:
        return "-"
    a = abs(s)
    if a < 10:
        return f"{s:.1f} s"
    if a < 120:
        return f"{s:.0f} s"
    if a < 7200:
        return f"{s / 60:.1f} min"
    if a < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:,.0f} d"


def format_status(snap: dict[str, Any], url: str = "") -> list[str]:
    """The lines ``bspump-cluster status`` prints: a header, then one line per worker."""
    cp = snap.get("checkpoint") or {}
    lines = [f"{snap['pipeline']}  {snap['state']}  up {human_seconds(snap.get('uptime_s'))}"
             f"  run {snap.get('run_id', '-')}" + (f"  {url}/" if url else "")]
    wm = snap.get("watermark")
    lag = snap.get("watermark_lag_s")
    lines.append(f"events {_n(snap['records_read'])} read, {_n(snap['events_per_s'])}/s   "
                 f"watermark {_iso(wm)}" + (f" (lag {human_seconds(lag)})" if wm is not None
                                            else ""))
    lines.append(f"dead letters {_n(snap['dead_letters'])}   late {_n(snap['late_events'])}   "
                 f"window rows {_n(snap.get('window_rows'))}   "
                 f"sessions ended {_n(snap.get('sessions_ended'))}   "
                 f"restarts {_n(snap['restarts'])}")
    ledger = snap.get("ledger")
    if ledger:
        lines.append(f"ledger: read {_n(ledger['read'])} = processed {_n(ledger['processed'])} "
                     f"+ late {_n(ledger['late'])} + dead {_n(ledger['dead'])}"
                     + (f" + in flight {_n(ledger['in_flight'])}" if ledger["in_flight"] else "")
                     + (f" + held {_n(ledger['held'])}" if ledger.get("held") else "")
                     + (f" + UNACCOUNTED {_n(ledger['unaccounted'])}"
                        if ledger["unaccounted"] else ""))
    found = snap.get("anomalies") or {}
    if found:
        lines.append("anomalies: " + ", ".join(f"{aid} {_n(n)}"
                                               for aid, n in sorted(found.items())))
    if cp.get("last_id") is not None:
        lines.append(f"last checkpoint {cp['last_id']}, {human_seconds(cp.get('age_s'))} ago, "
                     f"took {_n(cp.get('duration_s'), 3)} s ({_n(cp.get('taken'))} taken)")
        if cp.get("stall_s") is not None:
            lines.append(f"  routing stood still {_n(cp['stall_s'], 3)} s; workers wrote "
                         f"{_n((cp.get('bytes') or 0) / 1e6, 1)} MB, the slowest in "
                         f"{_n(cp.get('worker_write_s'), 3)} s; state "
                         f"{_n((cp.get('state_bytes') or 0) / 1e6, 1)} MB")
    else:
        lines.append("last checkpoint -" + ("" if cp.get("enabled", True)
                                            else " (checkpoints off)"))
    lag_by = snap.get("kafka_lag") or {}
    if lag_by:
        parts = ", ".join(f"{k} {_n(v)}" for k, v in sorted(lag_by.items()))
        lines.append(f"kafka lag {_n(sum(lag_by.values()))} ({parts})")
    head = ("worker", "key groups", "events in", "events out", "events/s", "queue",
            "open sessions")
    rows = [head] + [(str(w["worker"]), f"{w['key_groups'][0]}-{w['key_groups'][1]}",
                      _n(w["events_in"]), _n(w["events_out"]), _n(float(w["events_per_s"])),
                      _n(w["queue_depth"]), _n(w["open_sessions"]))
                     for w in snap["workers"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        lines.append("  ".join(c.ljust(widths[i]) if i == 1 else c.rjust(widths[i])
                               for i, c in enumerate(r)).rstrip())
    for w in snap["workers"]:
        if w.get("state") == "stalled":
            lines.append(f"worker {w['worker']} (pid {w.get('pid', '?')}) is stalled: silent for "
                         f"{human_seconds(w.get('silent_s'))} (stopped or wedged?)")
    for warning in (snap.get("warnings") or [])[-3:]:
        lines.append(f"warning {_iso(warning['time'])}: {warning['message']}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    """Ask the running cluster of a config for its figures and print them."""
    settings = _settings(args)
    if settings.tasks == "partition":
        return _partitions_status(settings, args.json)
    if settings.http is None:
        print(f"bspump-cluster: the status needs the coordinator's HTTP server, which is off "
              f"in {settings.config_path}: set [cluster] http = 127.0.0.1:PORT",
              file=sys.stderr)
        return exits.FAILED
    host, port = settings.http
    if port == 0:
        print(f"bspump-cluster: [cluster] http in {settings.config_path} has port 0 (any free "
              "port): give a fixed port to ask the cluster for its status", file=sys.stderr)
        return exits.FAILED
    url = _status_url(host, port)
    try:
        snap = fetch_snapshot(url)
    except ClusterError as e:
        summary = settings.output_dir / "summary.json"
        hint = f"; the last run's summary is {summary}" if summary.exists() else ""
        print(f"bspump-cluster: {e}{hint}", file=sys.stderr)
        return exits.FAILED
    if args.json:
        print(json.dumps({k: v for k, v in snap.items() if k != "matrices"}, indent=1))
    else:
        print("\n".join(format_status(snap, url)))
    return 0


def format_partitions(rows: list[dict[str, Any]]) -> list[str]:
    """The table ``status`` prints with ``tasks = partition``: one line per partition."""
    head = ("partition", "owner", "state", "offset", "records", "records/s", "dead", "late",
            "watermark", "checkpoint")
    table = [head]
    for r in rows:
        if r["checkpoint_id"] is None:
            table.append((r["partition"], "-", "no checkpoint", *("-",) * 7))
            continue
        table.append((r["partition"], str(r["owner"] or "-"),
                      "finished" if r["finished"] else "running", _n(r["offset"]),
                      _n(r["records_read"]), _n(r["records_per_s"]), _n(r["dead_letters"]),
                      _n(r["late_events"]), _iso(r["watermark"]),
                      f"{r['checkpoint_id']} ({human_seconds(r['checkpoint_age_s'])} ago)"))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return ["  ".join(c.ljust(widths[i]) if i < 3 else c.rjust(widths[i])
                      for i, c in enumerate(row)).rstrip() for row in table]


def _partitions_status(settings: ClusterSettings, as_json: bool) -> int:
    """``status`` with ``tasks = partition``: every partition, read from the shared location."""
    from cluster.partition_figures import partition_checkpoint_dirs, partition_status

    dirs = partition_checkpoint_dirs(settings)
    if not dirs:
        where = settings.checkpoint_dir if settings.checkpoint_dir_set else settings.output_dir
        print(f"bspump-cluster: no partition has a checkpoint in {where} yet", file=sys.stderr)
        return exits.FAILED
    rows = [partition_status(p, dirs[p]) for p in sorted(dirs, key=parse_partition)]
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print("\n".join(format_partitions(rows)))
    return 0


def cmd_layout(args: argparse.Namespace) -> int:
    """Print which key groups each worker owns (and, with --key, where keys go)."""
    settings = _settings(args)
    layout = Layout(settings.workers, settings.key_groups)
    print(f"pipeline {settings.pipeline_id} ({settings.pipeline}), "
          f"shard key {settings.routing.shard_key.describe()}")
    print(layout.describe())
    for key in args.key or ():
        print(f"key {key!r}: key group {layout.key_group(key)}, worker {layout.worker_of(key)}")
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """List checkpoints: id, time, workers, key groups, size, position; verify one."""
    settings = _settings(args)
    if settings.checkpoint_dir is None:
        print("checkpoints are off in this config (checkpoint_dir = none)")
        return 0
    if settings.tasks != "partition":
        return _list_checkpoints(settings.checkpoint_dir, args.verify)
    from cluster.partition_figures import partition_checkpoint_dirs

    dirs = partition_checkpoint_dirs(settings)
    if args.task_partition is not None:
        if args.task_partition not in dirs:
            print(f"no checkpoints of partition {args.task_partition} (partitions with "
                  f"checkpoints: {', '.join(sorted(dirs)) or 'none'})", file=sys.stderr)
            return 1
        return _list_checkpoints(dirs[args.task_partition], args.verify)
    if args.verify is not None:
        print("with tasks = partition, name the partition of checkpoint "
              f"{args.verify}: --partition TOPIC:N", file=sys.stderr)
        return exits.FAILED
    for partition in sorted(dirs, key=parse_partition):
        print(f"partition {partition}: ", end="")
        _list_checkpoints(dirs[partition], None)
    return 0


def _list_checkpoints(directory: Path, verify: int | None) -> int:
    found = checkpoint.scan(directory)
    if verify is not None:
        match = [c for c in found if c.id == verify]
        if not match:
            print(f"no checkpoint {verify} in {directory}", file=sys.stderr)
            return 1
        cp = checkpoint.verify(match[0])
        for line in checkpoint.describe(cp):
            print(line)
        return 0 if cp.complete else 1
    print(f"{len(found)} checkpoints in {directory}")
    for cp in found:
        checkpoint.verify(cp, checksums=False)
        for line in checkpoint.describe(cp):
            print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    ap = argparse.ArgumentParser(prog="bspump-cluster", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline config on a coordinator and N workers")
    run.add_argument("config", help="the cluster config (INI)")
    run.add_argument("--workers", "-w", type=int, help="worker processes (default: config, "
                                                      "else the number of cores)")
    run.add_argument("--output-dir", "-o", help="where results go (default: config, else ./out)")
    run.add_argument("--in-process", action="store_true",
                     help="one worker process (same as --workers 1; kept for old scripts)")
    run.add_argument("--fresh", action="store_true",
                     help="ignore and delete existing checkpoints; start from the beginning")
    run.add_argument("--partition", metavar="TOPIC:N",
                     help="run one partition task (tasks = partition starts these itself)")
    run.add_argument("--log-format", choices=logs.FORMATS, default=None,
                     help="log lines of every process: text (default) or json, one object "
                          f"a line (also ${logs.ENV})")
    run.set_defaults(func=cmd_run)
    st = sub.add_parser("status", help="print the figures of the running cluster of a config")
    st.add_argument("config")
    st.add_argument("--output-dir", "-o", help="the run's output folder (default: config)")
    st.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    st.set_defaults(func=cmd_status)
    cps = sub.add_parser("checkpoints", help="list (and verify) the checkpoints of a config")
    cps.add_argument("config")
    cps.add_argument("--output-dir", "-o", help="the run's output folder (default: config)")
    cps.add_argument("--partition", dest="task_partition", metavar="TOPIC:N",
                     help="with tasks = partition: only this partition's checkpoints")
    cps.add_argument("--verify", type=int, metavar="ID",
                     help="check every file of checkpoint ID against its manifest")
    cps.set_defaults(func=cmd_checkpoints)
    lay = sub.add_parser("layout", help="print the shard layout of a config")
    lay.add_argument("config")
    lay.add_argument("--workers", "-w", type=int)
    lay.add_argument("--key", action="append", help="show where this key goes (repeatable)")
    lay.set_defaults(func=cmd_layout)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bspump-cluster`` command."""
    args = build_parser().parse_args(argv)
    chosen = logs.setup("supervisor", fmt=getattr(args, "log_format", None))
    if args.command == "run":
        os.environ[logs.ENV] = chosen  # the coordinator and the workers log the same way
    try:
        rc: int = args.func(args)
        return rc
    except ClusterError as e:
        return exits.report_error(e)


if __name__ == "__main__":
    sys.exit(main())
