"""Start the coordinator: validate, bind, tell the supervisor, run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from cluster import exits
from cluster.errors import ClusterError
from cluster.process import add_child_arguments, child_settings
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
    add_child_arguments(ap)
    ap.add_argument("--ready-fd", type=int)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--restarts", type=int, default=0)
    args = ap.parse_args(argv)
    from cluster.logs import setup as setup_logging
    setup_logging("coordinator", level=logging.INFO)  # text, or JSON (run --log-format json)
    try:
        settings = child_settings(args)
        coord = Coordinator(settings, args.run_id, args.workers, fresh=args.fresh,
                            restarts=args.restarts)
        coord.bind_http()
    except ClusterError as e:
        return exits.report_error(e)
    transport = ZmqTransport(args.run_dir, args.workers)
    try:
        _ready(args.ready_fd, coord.timing.ring_span)
        return asyncio.run(coord.run(transport))
    finally:
        transport.close()
