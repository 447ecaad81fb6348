"""SessionAnalyzer: per-key sessions that end after a gap of ``session_timeout``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from bspump.keys import key_group
from bspump.processor import Analyzer
from bspump.state import RestoreInfo, StateReader, StateWriter

if TYPE_CHECKING:
    from bspump.application import Application
    from bspump.pipeline import Pipeline


class _Session:
    __slots__ = ("data", "events", "first", "last", "seq")

    def __init__(self, data: Any, t: float, seq: int) -> None:
        self.data = data
        self.first = t
        self.last = t
        self.events = 1
        self.seq = seq


class SessionAnalyzer(Analyzer):
    """Tracks sessions by id (usually the shard key, so a session lives on one worker).

    A session ends when the gap between two of its events exceeds
    ``session_timeout`` seconds of event time, or when the watermark passes its last
    event by more than that; ``on_session_end(session_id, session_data)`` is then
    called once. Every event that reads or creates a session counts towards it; the
    coordinator writes each ended session (id, first and last event time, events)
    to ``<pipeline>.<analyzer>.sessions.jsonl``. At the end of input every open
    session ends.
    """

    ConfigDefaults: dict[str, Any] = {"session_timeout": 1800.0}
    _FRAMEWORK_ATTRS = frozenset({"session_timeout"})

    def __init__(self, app: Application, pipeline: Pipeline, id: str | None = None,
                 config: Mapping[str, Any] | None = None, session_timeout: float = 1800) -> None:
        super().__init__(app, pipeline, id, config)
        self.session_timeout = float(self.setting("session_timeout", session_timeout))
        if not self.session_timeout > 0:
            raise self.config_error("session_timeout",
                                    f"must be positive, got {self.session_timeout}")
        # Kept in order of last use, so expiry scans only the oldest.
        self._sessions: dict[Any, _Session] = {}
        self._ended: list[list[Any]] = []

    # -- the user API ----------------------------------------------------------------------

    def get_session(self, session_id: Any) -> Any:
        """The open session's data, or None (also when it has just timed out)."""
        sessions = self._sessions
        s = sessions.get(session_id)
        if s is None:
            return None
        pipeline = self.Pipeline
        t = pipeline.event_time
        if t - s.last > self.session_timeout:
            self._end(session_id, s)
            return None
        # Count the event once, widen the time span, move the session to the newest end.
        seq = pipeline.event_seq
        if s.seq != seq:
            s.seq = seq
            s.events += 1
        if t > s.last:
            s.last = t
        elif t < s.first:
            s.first = t
        del sessions[session_id]
        sessions[session_id] = s
        return s.data

    def create_session(self, session_id: Any, session_data: Any) -> Any:
        """Open a session for ``session_id`` (ending an open one first) and return its data."""
        old = self._sessions.get(session_id)
        if old is not None:
            self._end(session_id, old)
        self._sessions[session_id] = _Session(session_data, self.Pipeline.event_time,
                                              self.Pipeline.event_seq)
        return session_data

    def end_session(self, session_id: Any) -> None:
        """End a session now."""
        s = self._sessions.get(session_id)
        if s is not None:
            self._end(session_id, s)

    def on_session_end(self, session_id: Any, session_data: Any) -> None:
        """Called once when a session ends."""

    @property
    def open_sessions(self) -> int:
        """How many sessions are open."""
        return len(self._sessions)

    # -- internals ----------------------------------------------------------------------------

    def _end(self, session_id: Any, s: _Session) -> None:
        del self._sessions[session_id]
        self._ended.append([session_id, s.first, s.last, s.events])
        try:
            self.on_session_end(session_id, s.data)
        except Exception as e:
            self.Pipeline._dead_letter(self.on_session_end, {"session_id": session_id}, e)

    def _advance(self, watermark: float) -> None:
        limit = watermark - self.session_timeout
        expired = []
        for session_id, s in self._sessions.items():
            if s.last < limit:
                expired.append((session_id, s))
            elif math.isfinite(limit):
                break
        for session_id, s in expired:
            self._end(session_id, s)

    def _finish(self, last_time: float) -> None:
        for session_id, s in list(self._sessions.items()):
            self._end(session_id, s)

    def _checkpoint(self, writer: StateWriter) -> None:
        """Open sessions by key group, so they can move to whichever worker owns them next."""
        super()._checkpoint(writer)
        run = self.App.Run
        groups = run.key_groups if run is not None else 256
        by_group: dict[int, list[list[Any]]] = {}
        for session_id, s in self._sessions.items():
            try:
                data = msgpack.packb(s.data, use_bin_type=True)
                msgpack.packb(session_id, use_bin_type=True)
            except (TypeError, ValueError, OverflowError) as e:
                self.Pipeline.dead_letters.append({
                    "reason": f"{self.Id}: session {session_id!r} cannot be checkpointed "
                              f"(its data is not msgpack-serialisable: {e}); it is kept in "
                              "memory but a restore will not have it",
                    "processor": self.Id, "event_time": s.last,
                    "record": {"session_id": repr(session_id)}})
                continue
            g = key_group(session_id, groups)
            by_group.setdefault(g, []).append([session_id, s.first, s.last, s.events, data])
        writer.put_object(f"sessions.{self.Id}", by_group)

    def _restore(self, readers: Sequence[StateReader], info: RestoreInfo) -> None:
        """Take every open session whose key this worker owns now, from all old workers."""
        super()._restore(readers, info)
        found: list[tuple[float, Any, _Session]] = []
        for reader in readers:
            by_group = reader.get_object(f"sessions.{self.Id}") or {}
            for entries in by_group.values():
                for session_id, first, last, events, data in entries:
                    key = tuple(session_id) if isinstance(session_id, list) else session_id
                    if not info.owns(key):
                        continue
                    s = _Session(msgpack.unpackb(data, raw=False, strict_map_key=False),
                                 first, -1)
                    s.last = last
                    s.events = events
                    found.append((last, key, s))
        found.sort(key=lambda x: x[0])
        for _, key, s in found:
            self._sessions[key] = s

    def _report(self) -> dict[str, Any] | None:
        if not self._ended:
            return None
        ended, self._ended = self._ended, []
        return {"ended": ended}
