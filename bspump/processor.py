"""Processors, analyzers, sources and sinks: the pieces a pipeline is built from.

Each piece is configured as in BSPump: the class's ``ConfigDefaults`` are
overridden by the ``config`` argument, then by INI sections
``[pipeline:PIPELINE_ID:NAME]`` where NAME is any base class name, the class name,
or the piece's id (later, more specific sections win). A key such a section sets
also overrides the matching constructor argument.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bspump.errors import ConfigError
from bspump.records import Limits
from bspump.state import RestoreInfo, StateReader, StateWriter

if TYPE_CHECKING:
    from bspump.application import Application, RunInfo
    from bspump.batch import EventBatch
    from bspump.pipeline import Pipeline

_PLAIN = (type(None), bool, int, float, str, bytes)


def NOTHING(batch: Any) -> None:
    """A batch step with no work (a piece that ignores events)."""


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Data msgpack can hold exactly: what the default ``get_state`` keeps."""
    if isinstance(value, _PLAIN):
        return True
    if depth > 32:
        return False
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _is_plain(v, depth + 1)
                   for k, v in value.items())
    return False


class ProcessorConfig(dict[str, Any]):
    """A piece's resolved configuration; remembers which keys were set explicitly."""

    def __init__(self, values: Mapping[str, Any], explicit: set[str], sections: list[str]):
        super().__init__(values)
        self.explicit = explicit
        self.sections = sections


def _convert(app: Application, section: str, key: str, default: Any) -> Any:
    cfg = app.Config
    if isinstance(default, bool):
        return cfg.get_bool(section, key, default)
    if isinstance(default, int):
        return cfg.get_int(section, key, default)
    if isinstance(default, float):
        return cfg.get_float(section, key, default)
    return cfg.get_str(section, key, "" if default is None else str(default))


def resolve_config(app: Application, pipeline_id: str, piece: Processor,
                   config: Mapping[str, Any] | None) -> ProcessorConfig:
    """Merge defaults, the ``config`` argument and the INI sections that name ``piece``."""
    defaults: dict[str, Any] = {}
    names: list[str] = []
    for cls in reversed(type(piece).__mro__):
        if cls is object:
            continue
        defaults.update(getattr(cls, "ConfigDefaults", {}) or {})
        if issubclass(cls, Processor):
            names.append(cls.__name__)
    if piece.Id not in names:
        names.append(piece.Id)
    else:
        # The id must win over base classes even when it equals one of their names.
        names.remove(piece.Id)
        names.append(piece.Id)
    values = dict(defaults)
    explicit: set[str] = set()
    for key, value in (config or {}).items():
        if key not in defaults:
            raise ConfigError(f"{type(piece).__name__} {piece.Id!r}: unknown config key {key!r} "
                              f"(known keys: {', '.join(sorted(defaults)) or 'none'})")
        values[key] = value
        explicit.add(key)
    used: list[str] = []
    for name in names:
        section = f"pipeline:{pipeline_id}:{name}"
        if not app.Config.has_section(section):
            continue
        app.Config.check_keys(section, defaults)
        for key in app.Config.section(section):
            values[key] = _convert(app, section, key, defaults[key])
            explicit.add(key)
        used.append(section)
        app._used_sections.add(section)
    return ProcessorConfig(values, explicit, used)


class Processor:
    """A step of a pipeline: ``process(context, event)`` returns the event to pass on.

    Returning ``None`` drops the event. ``context`` is a dict for this one event;
    ``context["event_time"]`` is its event time in epoch seconds.
    """

    ConfigDefaults: dict[str, Any] = {}
    # Attributes the framework sets; the default get_state leaves them out.
    _FRAMEWORK_ATTRS: frozenset[str] = frozenset()

    def __init__(self, app: Application, pipeline: Pipeline, id: str | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        self.App = app
        self.Pipeline = pipeline
        self.Id = id or type(self).__name__
        self.Config = resolve_config(app, pipeline.Id, self, config)

    def setting(self, key: str, argument: Any) -> Any:
        """The constructor ``argument``, unless the config sets ``key`` explicitly."""
        return self.Config[key] if key in self.Config.explicit else argument

    def config_error(self, key: str, message: str) -> ConfigError:
        """A ConfigError naming the section that configures ``key`` of this piece."""
        for section in reversed(self.Config.sections):
            if key in self.App.Config.section(section):
                return self.App.Config.error(section, key, message)
        return ConfigError(f"{type(self).__name__} {self.Id!r}: {key}: {message}")

    def process(self, context: dict[str, Any], event: Any) -> Any:
        """Handle one event; return it (or another) to pass it on, None to drop it."""
        return event

    # -- hooks the runtime calls (not part of the user API) ---------------------------

    def check(self) -> None:
        """Validate settings that matter only when this piece really runs."""

    def _step(self) -> tuple[Any, bool]:
        """The callable the pipeline runs per event, and whether None means "pass on"."""
        return self.process, False

    def _batch_step(self) -> Any:
        """The callable that takes a whole EventBatch; None: this piece needs dicts."""
        return None

    def _start(self, run: RunInfo) -> None:
        """The run is about to begin: allocate state."""

    def _advance(self, watermark: float) -> None:
        """Event time has reached ``watermark``."""

    def _finish(self, last_time: float) -> None:
        """End of input; ``last_time`` is the newest event time of the run."""

    def _report(self) -> dict[str, Any] | None:
        """What the coordinator must learn since the last report (None: nothing)."""
        return None

    def get_state(self) -> Any:
        """State to keep in a checkpoint (msgpack-serialisable); None keeps nothing.

        The default keeps every public attribute the subclass set to plain data
        (numbers, strings, lists, dicts of them), e.g. the last values of an anomaly
        detector's window; override it to choose. The state is per worker.
        """
        framework = set().union(*(getattr(c, "_FRAMEWORK_ATTRS", frozenset())
                                  for c in type(self).__mro__))
        state = {k: v for k, v in vars(self).items()
                 if not k.startswith("_") and not k[:1].isupper() and k not in framework
                 and _is_plain(v)}
        return state or None

    def set_state(self, state: Any) -> None:
        """Restore what :meth:`get_state` returned (the default sets the attributes)."""
        if isinstance(state, dict):
            for k, v in state.items():
                if isinstance(k, str) and not k.startswith("_"):
                    setattr(self, k, v)

    def _checkpoint(self, writer: StateWriter) -> None:
        """Write this piece's state into a checkpoint."""
        state = self.get_state()
        if state is not None:
            writer.put_object(f"state.{self.Id}", state)

    def _restore(self, readers: Sequence[StateReader], info: RestoreInfo) -> None:
        """Take this piece's state back from a checkpoint."""
        if info.worker < len(readers):
            state = readers[info.worker].get_object(f"state.{self.Id}")
            if state is not None:
                self.set_state(state)


class Analyzer(Processor):
    """A processor that observes events: ``evaluate`` returns None to pass the event on."""

    def evaluate(self, context: dict[str, Any], event: Any) -> Any:
        """Look at one event; return a replacement event, or None to pass it unchanged."""
        return None

    def process(self, context: dict[str, Any], event: Any) -> Any:
        """Run :meth:`evaluate`; analyzers never drop events."""
        result = self.evaluate(context, event)
        return event if result is None else result

    def evaluate_batch(self, batch: EventBatch) -> None:
        """Look at a whole batch of events (numpy columns) at once.

        Override it beside :meth:`evaluate`, with the same effect on state, to let the
        pipeline skip building a dict per event (see :mod:`bspump.batch`). The batch
        path is taken only when every piece of the pipeline can take batches.
        """
        raise NotImplementedError

    def _step(self) -> tuple[Any, bool]:
        # Calling evaluate directly saves a call per event; None passes the event on.
        if type(self).process is Analyzer.process:
            return self.evaluate, True
        return self.process, False

    def _batch_step(self) -> Any:
        cls = type(self)
        if cls.process is not Analyzer.process:
            return None
        if cls.evaluate_batch is not Analyzer.evaluate_batch:
            return self.evaluate_batch
        if cls.evaluate is Analyzer.evaluate:
            return NOTHING  # observes nothing: no work per batch
        return None


@dataclass
class SourceBatch:
    """Records a source read, the ones it could not decode, and where it now stands.

    A source that was asked for raw records (``Source.want_raw``) may hand over
    undecoded JSON objects in ``raw`` instead of ``records``: the coordinator then
    decodes only the routing fields and the workers decode the rest, in parallel.
    ``raw_origin`` and ``raw_lines`` (or ``raw_first_line`` + index) say where each
    raw record came from, for dead letters.
    """

    records: list[Any]
    dead: list[tuple[Any, str]] = field(default_factory=list)
    position: Any = None
    raw: list[bytes] | None = None
    columns: EventBatch | None = None
    raw_origin: str = ""
    raw_first_line: int = 1
    raw_lines: list[int] | None = None
    raw_places: list[str] | None = None

    def where(self, index: int) -> str:
        """``origin:line`` (or a source's own place, e.g. ``topic:partition@offset``)."""
        if self.raw_places is not None:
            return self.raw_places[index]
        line = self.raw_lines[index] if self.raw_lines is not None \
            else self.raw_first_line + index
        return f"{self.raw_origin}:{line}"

    def __len__(self) -> int:
        if self.columns is not None:
            return len(self.columns)
        return len(self.raw) if self.raw is not None else len(self.records)


class Source(Processor):
    """Where events come from; runs in the coordinator only."""

    ConfigDefaults: dict[str, Any] = {"batch": 1000}
    # Sources that can yield undecoded JSON objects (or numpy columns) say so; the runtime
    # then asks for them with want_raw (want_columns).
    supports_raw = False
    want_raw = False
    supports_columns = False
    want_columns = False

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Yield batches of decoded records until the input ends (forever for streams)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement batches()")
        yield SourceBatch([])  # pragma: no cover

    def seek(self, position: Any) -> None:
        """Resume after ``position`` (a value a batch carried)."""
        raise ConfigError(f"{type(self).__name__} cannot resume from a position")

    async def close(self) -> None:
        """Release connections and files."""

    @property
    def max_record_bytes(self) -> int:
        """Records larger than this become dead letters."""
        run = self.App.Run
        return run.max_record_bytes if run is not None else 1 << 20

    @property
    def record_limits(self) -> Limits:
        """Size and nesting limits of one record (``[cluster] max_record_*``)."""
        run = self.App.Run
        return Limits(run.max_record_bytes, run.max_record_depth) if run is not None \
            else Limits()


class Sink(Processor):
    """Where events go; every worker runs its own sink."""

    def process(self, context: dict[str, Any], event: Any) -> Any:
        """Write the event; sinks end the chain."""
        self.write(context, event)
        return None

    def write(self, context: dict[str, Any], event: Any) -> None:
        """Write one event."""

    def flush(self) -> None:
        """Push buffered events out."""

    def close(self) -> None:
        """Flush and release resources."""
        self.flush()
