"""Start the coordinator: validate, bind, tell the supervisor, run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from cluster import exits
from cluster.config import Config, load_cluster_settings
from cluster.errors import ClusterError, ConfigError, StartRefused
from coordinator.runtime import Coordinator
from coordinator.transport import ZmqTransport


def _ready(fd: int | None, ring_span: float) -> None:
    if fd is None:
        return
    os.write(fd, f"ready {ring_span!r}\n".encode())
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """``python -m coordinator``: started by the supervisor."""
    ap = argparse.ArgumentParser(prog="python -m coordinator")
    ap.add_argument("--config", required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--partition")
    ap.add_argument("--ready-fd", type=int)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--restarts", type=int, default=0)
    args = ap.parse_args(argv)
    from cluster.logs import setup as setup_logging
    setup_logging("coordinator", level=logging.INFO)  # text, or JSON (run --log-format json)
    try:
        cfg = Config.load(args.config)
        settings = load_cluster_settings(cfg, Path(args.config), workers=args.workers,
                                         output_dir=args.output_dir, partition=args.partition)
        coord = Coordinator(settings, args.run_id, args.workers, fresh=args.fresh,
                            restarts=args.restarts)
        coord.bind_http()
    except ConfigError as e:
        print(f"bspump-cluster: config error: {e}", file=sys.stderr)
        return exits.CONFIG
    except StartRefused as e:
        print(f"bspump-cluster: not started: {e}", file=sys.stderr)
        return exits.REFUSED
    except ClusterError as e:
        print(f"bspump-cluster: {e}", file=sys.stderr)
        return exits.FAILED
    transport = ZmqTransport(args.run_dir, args.workers)
    try:
        _ready(args.ready_fd, coord.timing.ring_span)
        return asyncio.run(coord.run(transport))
    finally:
        transport.close()
