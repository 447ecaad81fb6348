"""Log setup shared by the supervisor, the coordinator and the workers.

Human-readable lines stay the default (``bspump-cluster: checkpoint 3: ...``,
``worker 1: ...``). ``bspump-cluster run --log-format json`` sets :data:`ENV` in the
supervisor's environment; every child inherits it and calls :func:`setup`, so each
process writes one JSON object per line to stderr::

    {"time": "2026-01-01T00:00:00.123Z", "level": "info", "role": "coordinator",
     "pid": 4242, "logger": "bspump-cluster.coordinator", "event": "checkpoint",
     "message": "checkpoint 3: 19.4 MB in 0.214 s", "checkpoint_id": 3, ...}

Structured fields come from the attributes passed with ``extra={...}`` on a log call:
``"event"`` names the event, and every other non-standard attribute of the record
becomes a field. A log call names its fields in its message and passes them once::

    fields = {"reason": why, "partitions": names}
    log.info("%(reason)s: stopping the tasks of %(partitions)s", fields,
             extra={"event": "tasks_stopping", **fields})

A field named like an attribute every LogRecord has (``process``, ``name``...) is
passed with a trailing underscore (``process_``) and written without it.

This module imports nothing from ``coordinator`` or ``workers``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import IO, Any

ENV = "BSPUMP_CLUSTER_LOG_FORMAT"
# Set by a host's member (cluster/member.py) for its partition tasks:
TASK_ENV = "BSPUMP_CLUSTER_TASK"  # the task's partition, which tags each of its log lines
MEMBER_ENV = "BSPUMP_CLUSTER_MEMBER"  # the member (host:pid), named in checkpoint manifests
FORMATS = ("text", "json")
ROLES = ("supervisor", "coordinator", "worker")
_HANDLER = "bspump-cluster"


# Attributes every LogRecord has; anything else on a record came with ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


def log_format(value: str | None = None) -> str:
    """The format to use: ``value`` if given, else the environment's, else ``text``."""
    chosen = (value or os.environ.get(ENV) or "text").strip().lower()
    return chosen if chosen in FORMATS else "text"


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a log argument."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, role, pid, message and the structured fields."""

    def __init__(self, role: str, worker: int | None = None) -> None:
        super().__init__()
        self.role = role
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        t = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"
        out: dict[str, Any] = {"time": stamp, "level": record.levelname.lower(),
                               "role": self.role}
        if self.worker is not None:
            out["worker"] = self.worker
        task = os.environ.get(TASK_ENV)
        if task:
            out["partition"] = task
        out["pid"] = record.process
        out["logger"] = record.name
        event = getattr(record, "event", None)
        if event is not None:
            out["event"] = event
        out["message"] = record.getMessage()
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[_field_name(key)] = _plain(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _field_name(key: str) -> str:
    """The JSON field of an ``extra`` key: ``process_`` is ``process`` (see module docstring)."""
    if key.endswith("_") and key[:-1] in _STANDARD:
        return key[:-1]
    return key


def text_prefix(role: str, worker: int | None = None) -> str:
    """``bspump-cluster: ``, ``worker 1: ``; a partition task's: ``worker 1 [events:3]: ``."""
    who = f"worker {worker}" if role == "worker" and worker is not None else "bspump-cluster"
    task = os.environ.get(TASK_ENV)
    return f"{who} [{task}]: " if task else f"{who}: "


def setup(role: str, worker: int | None = None, fmt: str | None = None,
          level: int = logging.INFO, stream: IO[str] | None = None) -> str:
    """Configure this process's root logger for ``role``; return the format chosen.

    ``fmt`` is ``text`` or ``json``; when None, the environment variable :data:`ENV`
    decides (the supervisor sets it for its children), and ``text`` is the default.
    """
    chosen = log_format(fmt)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if chosen == "json":
        handler.setFormatter(JsonFormatter(role, worker))
    else:
        prefix = text_prefix(role, worker).replace("%", "%%")
        handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER:  # ours from an earlier call; others (pytest's) stay
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka tells every group join at INFO; its warnings and errors are what matter here.
    logging.getLogger("aiokafka").setLevel(max(level, logging.WARNING))
    return chosen
