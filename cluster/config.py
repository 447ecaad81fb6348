"""The cluster and pipeline settings the runtime reads from the INI configuration.

The INI file itself (loading, ``pipelines.conf`` beside it, typed reading, errors
naming file, section and key) is :class:`bspump.config.Config`, which the Application
holds; this module validates ``[cluster]`` and ``[pipeline:ID]`` from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bspump.config import PIPELINES_CONF, Config, Setting
from bspump.kafka.partition import parse_partition
from bspump.resultfiles import parse_file_mode
from cluster.errors import ConfigError

__all__ = ["PIPELINES_CONF", "Config", "Setting", "parse_file_mode", "parse_partition"]


# -- the settings the runtime reads ----------------------------------------------------

CLUSTER_KEYS = {
    "pipeline": "module:Class of the pipeline to run (required)",
    "pipeline_id": "id of the pipeline (default: the class name)",
    "workers": "number of worker processes (default: number of cores)",
    "key_groups": "number of key groups keys hash into (default 256)",
    "output_dir": "where results are written (default ./out)",
    "batch_size": "events per message to a worker (default 1000)",
    "max_record_bytes": "records larger than this are dead letters (default 1048576)",
    "max_record_depth": "records nested deeper than this are dead letters (default 64)",
    "progress": "progress line on stderr: auto, yes or no (default auto: when a terminal)",
    "max_lag": "seconds of event time workers may run ahead of the merge (default: 8 ticks)",
    "python_path": "folders (':'-separated, relative to the config file) to import from",
    "checkpoint_dir": "where checkpoints go (default <output_dir>/checkpoints; 'none': off)",
    "checkpoint_interval": "seconds between checkpoints (default 10)",
    "checkpoint_events": "events between checkpoints, whichever comes first (default 5000000)",
    "checkpoints_kept": "complete checkpoints to keep (default 3)",
    "max_restarts": "restarts from the last checkpoint after a process dies (default 3)",
    "http": "host:port for /metrics and the live page (default off; 127.0.0.1:PORT)",
    "worker_timeout": "seconds a worker may stay silent (no progress, no heartbeat) before it is "
                      "killed and the run restarts from the last checkpoint (default 60; 0: off)",
    "tasks": "one (default): one coordinator reads every partition this host is assigned; "
             "partition: one task per Kafka partition, whose state moves with the partition",
    "http_public": "yes: allow http on an address other than loopback (default no)",
    "file_mode": "octal permissions of result, dead-letter and report files (default 0600)",
}

TASKS = ("one", "partition")

PIPELINE_KEYS = {
    "shard_key": "field name, or geo_cell(lat_field, lon_field, degrees)",
    "time_field": "field with the event time (epoch seconds or ISO-8601); unset: wall clock",
    "allowed_lateness": "seconds the watermark trails the newest event time (default 0)",
    "max_time_jump": "seconds an event may be ahead of the newest event time before it is held "
                     "until the stream confirms the jump (default 3600; 0: off)",
    "time_jump_confirm": "records that confirm a held jump, or refute it (default 100)",
    "late_warning_share": "warn when more than this share of the records read in 10 s are "
                          "late (default 0.1)",
    "source": "module:Class replacing the pipeline's source",
    "sink": "module:Class replacing the pipeline's sink",
}


@dataclass(frozen=True)
class ShardKeySpec:
    """How the shard key is taken from an event."""

    field: str | None = None
    geo: tuple[str, str, float] | None = None

    def describe(self) -> str:
        """The spec as written in the config."""
        if self.geo is not None:
            lat, lon, size = self.geo
            return f"geo_cell({lat}, {lon}, {size:g})"
        return str(self.field)


@dataclass(frozen=True)
class PipelineSettings:
    """``[pipeline:ID]``: how the coordinator routes and times this pipeline's events."""

    pipeline_id: str
    shard_key: ShardKeySpec
    time_field: str | None = None
    allowed_lateness: float = 0.0
    max_time_jump: float = 3600.0
    time_jump_confirm: int = 100
    late_warning_share: float = 0.1
    source: str | None = None
    sink: str | None = None


@dataclass(frozen=True)
class ClusterSettings:
    """``[cluster]`` and the routing part of ``[pipeline:ID]``, validated."""

    config_path: Path
    pipeline: str
    pipeline_id: str
    workers: int
    key_groups: int
    output_dir: Path
    batch_size: int
    max_record_bytes: int
    progress: str
    max_lag: float | None
    routing: PipelineSettings
    checkpoint_dir: Path | None = None
    # Whether checkpoint_dir was configured (partition tasks then share it, one folder
    # per partition) rather than defaulting to <output_dir>/checkpoints.
    checkpoint_dir_set: bool = False
    checkpoint_interval: float = 10.0
    checkpoint_events: int = 5_000_000
    checkpoints_kept: int = 3
    max_restarts: int = 3
    worker_timeout: float = 60.0
    http: tuple[str, int] | None = None
    max_record_depth: int = 64
    file_mode: int = 0o600
    tasks: str = "one"
    # The Kafka partition ("topic:N") a partition task runs, else None.
    partition: str | None = None
    config: Config = field(repr=False, compare=False, default_factory=Config)


def parse_shard_key(cfg: Config, section: str, raw: str) -> ShardKeySpec:
    """Parse ``user_id`` or ``geo_cell(latitude, longitude, 1.0)``."""
    text = raw.strip()
    # "geo_cell(" only: a plain field may be called geo_cell_id.
    if text.startswith("geo_cell") and text[len("geo_cell"):].lstrip().startswith("("):
        inner = text[len("geo_cell"):].strip()
        if not inner.endswith(")"):
            raise cfg.error(section, "shard_key",
                            f"expected geo_cell(lat_field, lon_field, degrees), got {raw!r}")
        parts = [p.strip() for p in inner[1:-1].split(",")]
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise cfg.error(section, "shard_key",
                            f"expected geo_cell(lat_field, lon_field, degrees), got {raw!r}")
        try:
            size = float(parts[2])
        except ValueError:
            raise cfg.error(section, "shard_key",
                            f"cell size must be a number of degrees, got {parts[2]!r}") from None
        if not size > 0:
            raise cfg.error(section, "shard_key", f"cell size must be positive, got {size}")
        return ShardKeySpec(geo=(parts[0], parts[1], size))
    if not text or any(c in text for c in "(), "):
        raise cfg.error(section, "shard_key", f"expected a field name, got {raw!r}")
    return ShardKeySpec(field=text)


def _split_class_ref(cfg: Config, section: str, key: str, raw: str) -> str:
    module, _, name = raw.partition(":")
    if not module or not name:
        raise cfg.error(section, key, f"expected module:Class, got {raw!r}")
    return raw


def _parse_http(cfg: Config) -> tuple[str, int] | None:
    """``[cluster] http`` as (host, port); another address than loopback needs http_public.

    The page and /metrics name keys, counts and hosts: serving them to the network is a
    decision the config states, not a side effect of a typo such as ``0.0.0.0``.
    """
    from cluster.httpd import is_loopback

    raw = cfg.get("cluster", "http")
    public = cfg.get_bool("cluster", "http_public", False)
    if raw is None or raw.lower() in ("", "off", "no", "none"):
        return None
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", raw
    try:
        port = int(port_text)
    except ValueError:
        raise cfg.error("cluster", "http", f"expected host:port, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise cfg.error("cluster", "http", f"port must be 0..65535, got {port}")
    host = host.strip("[]") or "127.0.0.1"
    if not is_loopback(host) and not public:
        raise cfg.error("cluster", "http", f"{host} is not a loopback address: the live page "
                        "and /metrics would be served to the network; set http_public = yes "
                        "to allow that, or use 127.0.0.1")
    return host, port


def partition_folder(partition: str) -> str:
    """``events:3`` -> ``events-3``: the folder of a partition task's results and checkpoints."""
    topic, number = parse_partition(partition)
    return f"{topic}-{number}"


def load_cluster_settings(cfg: Config, config_path: Path, workers: int | None = None,
                          output_dir: str | None = None,
                          partition: str | None = None) -> ClusterSettings:
    """Validate ``[cluster]`` and ``[pipeline:ID]``; raise ConfigError naming the key.

    With ``partition`` these are the settings of one partition task: ``output_dir`` is
    the task's folder, and checkpoints go to ``<checkpoint_dir>/<topic>-<N>``.
    """
    if not cfg.has_section("cluster"):
        raise ConfigError(f"{config_path}: missing section [cluster]")
    cfg.check_keys("cluster", CLUSTER_KEYS)
    pipeline = cfg.get("cluster", "pipeline")
    if not pipeline:
        raise cfg.error("cluster", "pipeline", "missing key (module:Class of the pipeline)")
    _split_class_ref(cfg, "cluster", "pipeline", pipeline)
    pipeline_id = cfg.get_str("cluster", "pipeline_id", pipeline.partition(":")[2])
    key_groups = cfg.get_int("cluster", "key_groups", 256, minimum=1, maximum=1 << 20)
    n = workers if workers is not None else cfg.get_int(
        "cluster", "workers", os.cpu_count() or 1, minimum=1)
    if n < 1:
        raise ConfigError("--workers must be at least 1")
    if n > key_groups:
        raise cfg.error("cluster", "workers",
                        f"{n} workers but only {key_groups} key groups: raise key_groups")
    out = Path(output_dir) if output_dir else cfg.path(cfg.get_str("cluster", "output_dir", "out"))
    progress = cfg.get_str("cluster", "progress", "auto").lower()
    if progress not in ("auto", "yes", "no"):
        raise cfg.error("cluster", "progress", f"expected auto, yes or no, got {progress!r}")
    max_lag_raw = cfg.get("cluster", "max_lag")
    max_lag = None if max_lag_raw is None else cfg.get_float("cluster", "max_lag", 0.0,
                                                               minimum=0.0)

    section = f"pipeline:{pipeline_id}"
    if not cfg.has_section(section):
        raise ConfigError(f"{config_path}: missing section [{section}] (it names shard_key)")
    cfg.check_keys(section, PIPELINE_KEYS)
    raw_key = cfg.get(section, "shard_key")
    if not raw_key:
        raise cfg.error(section, "shard_key", "missing key (a field such as user_id)")
    source = cfg.get(section, "source")
    sink = cfg.get(section, "sink")
    routing = PipelineSettings(
        pipeline_id=pipeline_id,
        shard_key=parse_shard_key(cfg, section, raw_key),
        time_field=cfg.get(section, "time_field") or None,
        allowed_lateness=cfg.get_float(section, "allowed_lateness", 0.0, minimum=0.0,
                                       maximum=366 * 86400.0),
        max_time_jump=cfg.get_float(section, "max_time_jump", 3600.0, minimum=0.0),
        time_jump_confirm=cfg.get_int(section, "time_jump_confirm", 100, minimum=1,
                                      maximum=1_000_000),
        late_warning_share=cfg.get_float(section, "late_warning_share", 0.1, minimum=0.0,
                                         maximum=1.0),
        source=_split_class_ref(cfg, section, "source", source) if source else None,
        sink=_split_class_ref(cfg, section, "sink", sink) if sink else None,
    )
    raw_cp = cfg.get("cluster", "checkpoint_dir")
    if raw_cp is not None and raw_cp.lower() in ("none", "off", "no", ""):
        checkpoint_dir = None
    else:
        checkpoint_dir = cfg.path(raw_cp) if raw_cp else out / "checkpoints"
    tasks = cfg.get_str("cluster", "tasks", "one").lower()
    if tasks not in TASKS:
        raise cfg.error("cluster", "tasks", f"expected one or partition, got {tasks!r}")
    if tasks == "partition" and checkpoint_dir is None:
        raise cfg.error("cluster", "checkpoint_dir", "tasks = partition needs checkpoints: "
                        "a partition's state moves between hosts through them")
    http = _parse_http(cfg)
    if partition is not None:
        parse_partition(partition)
        if raw_cp and checkpoint_dir is not None:
            checkpoint_dir = checkpoint_dir / partition_folder(partition)
        http = None  # several tasks share a host: its member serves their figures
        progress = "no"  # nor a progress line each: the host's member reports for them
    return ClusterSettings(
        http=http,
        file_mode=parse_file_mode(cfg),
        tasks=tasks,
        partition=partition,
        checkpoint_dir=checkpoint_dir,
        checkpoint_dir_set=bool(raw_cp),
        checkpoint_interval=cfg.get_float("cluster", "checkpoint_interval", 10.0, minimum=0.01),
        checkpoint_events=cfg.get_int("cluster", "checkpoint_events", 5_000_000, minimum=1),
        checkpoints_kept=cfg.get_int("cluster", "checkpoints_kept", 3, minimum=1),
        max_restarts=cfg.get_int("cluster", "max_restarts", 3, minimum=0),
        worker_timeout=cfg.get_float("cluster", "worker_timeout", 60.0, minimum=0.0),
        config_path=config_path,
        pipeline=pipeline,
        pipeline_id=pipeline_id,
        workers=n,
        key_groups=key_groups,
        output_dir=out,
        batch_size=cfg.get_int("cluster", "batch_size", 1000, minimum=1, maximum=1_000_000),
        max_record_bytes=cfg.get_int("cluster", "max_record_bytes", 1 << 20, minimum=64),
        # At most 500: msgpack (the wire, checkpoints) refuses values nested past 511.
        max_record_depth=cfg.get_int("cluster", "max_record_depth", 64, minimum=1,
                                     maximum=500),
        progress=progress,
        max_lag=max_lag,
        routing=routing,
        config=cfg,
    )


def import_object(cfg: Config, section: str, key: str, ref: str) -> object:
    """Import ``module:Name`` with the config file's folder (and python_path) on ``sys.path``.

    The folders go after the installed packages: a ``msgpack.py`` beside the config
    must not replace the dependency of that name in this process.
    """
    import importlib
    import sys

    module_name, _, attr = ref.partition(":")
    extra = [p for p in (cfg.get("cluster", "python_path") or "").split(":") if p.strip()]
    for folder in [str(cfg.base_dir), *(str(cfg.base_dir / p.strip()) for p in extra)]:
        if folder not in sys.path:
            sys.path.append(folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise cfg.error(section, key, f"cannot import {module_name!r}: "
                                      f"{type(e).__name__}: {e}") from None
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise cfg.error(section, key, f"module {module_name!r} has no {attr!r}") from None
    return obj
