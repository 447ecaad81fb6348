"""The on-disk checkpoint format.

A checkpoint is a folder ``cp-<id>`` in the checkpoint directory::

    cp-00000042/
        w0.state.msgpack        worker 0: sessions by key group, analyzer states, metadata
        w0.<name>.npy           worker 0: one numpy array per matrix / window ring
        w1.state.msgpack ...
        MANIFEST.json           written last: source position, counters, every file's
                                size and crc32

Every file goes to a temporary name, is fsynced and renamed; the manifest is written
by the coordinator only when every worker has acknowledged its files, so a folder
without a manifest, or whose files do not match it, is incomplete and is skipped.
A manifest is untrusted data (see :func:`verify`): one naming a file outside its
folder, a link, a FIFO, or lacking what a restore reads is skipped the same way.
Nothing is pickled: arrays are ``.npy`` (read with ``allow_pickle=False``), the rest
msgpack and JSON.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import stat
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from cluster import manifest as manifests
from cluster.errors import CheckpointError, ContractError
from cluster.manifest import FORMAT, MANIFEST, FileEntry, Manifest
from cluster.outputs import atomic_write_bytes, fsync_dir

log = logging.getLogger("bspump-cluster.checkpoint")

__all__ = ["FORMAT", "MANIFEST", "Checkpoint", "FileEntry", "Manifest", "ShardReader",
           "ShardWriter"]
_PREFIX = "cp-"


def folder_name(cp_id: int) -> str:
    """``cp-00000042``."""
    return f"{_PREFIX}{cp_id:08d}"


def _write(path: Path, data: bytes) -> FileEntry:
    # The folder is fsynced once, by ShardWriter.close, after every rename of the shard.
    atomic_write_bytes(path, data, sync_dir=False)
    return FileEntry(size=len(data), crc32=zlib.crc32(data))


def _read_regular(path: Path) -> bytes:
    """The bytes of the regular file ``path``; CheckpointError for anything else.

    A symbolic link is not followed (it may point anywhere), and a FIFO or device is
    opened without blocking and refused: reading one would hang the run.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CheckpointError(f"{path}: not a regular file (a symbolic link)") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{path}: not a regular file")
        return f.read()


@dataclass
class ShardWriter:
    """Writes one worker's files into a checkpoint folder."""

    folder: Path
    worker: int
    files: dict[str, FileEntry] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)

    def put_array(self, name: str, array: np.ndarray) -> None:
        """Store an array as ``w<k>.<name>.npy``."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        fname = f"w{self.worker}.{name}.npy"
        self.files[fname] = _write(self.folder / fname, buf.getvalue())

    def put_object(self, name: str, obj: Any) -> None:
        """Store a msgpack-serialisable object (written by :meth:`close`)."""
        self.objects[name] = obj

    def close(self) -> dict[str, FileEntry]:
        """Write the objects file, fsync the folder; return every file's size and crc32."""
        fname = f"w{self.worker}.state.msgpack"
        data = msgpack.packb(self.objects, use_bin_type=True)
        self.files[fname] = _write(self.folder / fname, data)
        fsync_dir(self.folder)
        return self.files


COORDINATOR_STATE = "coordinator.state.msgpack"


def write_coordinator_state(folder: Path, state: dict[str, Any]) -> dict[str, FileEntry]:
    """The coordinator's own state (e.g. anomaly history) into a checkpoint folder.

    Returns the file's entry for the manifest's ``files``.
    """
    meta = _write(folder / COORDINATOR_STATE, msgpack.packb(state, use_bin_type=True))
    fsync_dir(folder)
    return {COORDINATOR_STATE: meta}


def read_coordinator_state(folder: Path) -> dict[str, Any]:
    """What :func:`write_coordinator_state` wrote (empty when the checkpoint has none)."""
    path = folder / COORDINATOR_STATE
    try:
        state = msgpack.unpackb(_read_regular(path), raw=False, strict_map_key=False)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, msgpack.UnpackException) as e:
        raise CheckpointError(f"{path}: unreadable: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a map")
    return state


class ShardReader:
    """Reads the files one old worker wrote into a (verified) checkpoint."""

    def __init__(self, folder: Path, worker: int) -> None:
        self.folder = folder
        self.worker = worker
        path = folder / f"w{worker}.state.msgpack"
        try:
            self.objects: dict[str, Any] = msgpack.unpackb(
                _read_regular(path), raw=False, strict_map_key=False)
        except (OSError, ValueError, msgpack.UnpackException) as e:
            raise CheckpointError(f"{path}: unreadable: {e}") from None

    def get_object(self, name: str) -> Any:
        """An object stored with ``put_object``, or None."""
        return self.objects.get(name)

    def get_array(self, name: str) -> np.ndarray | None:
        """An array stored with ``put_array``, or None."""
        path = self.folder / f"w{self.worker}.{name}.npy"
        try:
            data = _read_regular(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CheckpointError(f"{path}: unreadable: {e}") from None
        try:
            result: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable: {e}") from None
        return result


@dataclass
class Checkpoint:
    """A checkpoint folder and, when it is complete, its manifest."""

    id: int
    path: Path
    manifest: Manifest | None = None
    problem: str | None = None

    @property
    def complete(self) -> bool:
        """Manifest present and every file matches it."""
        return self.manifest is not None and self.problem is None

    def size(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest last: from now on the checkpoint counts as complete."""
    # json, not msgspec.json: a watermark before the first event is -Infinity, which
    # json writes and reads back and msgspec.json would turn into null.
    data = json.dumps(manifests.encode(manifest), indent=1).encode()
    atomic_write_bytes(folder / MANIFEST, data)


def _file_problem(folder: Path, name: str, meta: FileEntry, checksums: bool) -> str | None:
    """What is wrong with one file the manifest lists, or None."""
    path = folder / name
    try:
        if checksums:
            data = _read_regular(path)
            size = len(data)
        else:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                return f"{name} is not a regular file"
            size = st.st_size
    except FileNotFoundError:
        return f"{name} is missing"
    except CheckpointError:
        return f"{name} is not a regular file"
    except OSError as e:
        return f"{name} is unreadable: {e.strerror}"
    if size != meta.size:
        return f"{name} has {size} bytes, the manifest says {meta.size}"
    if checksums and zlib.crc32(data) != meta.crc32:
        return f"{name} fails its checksum"
    return None


def verify(cp: Checkpoint, checksums: bool = True) -> Checkpoint:
    """Validate a checkpoint as data; sets ``cp.manifest`` when complete, else ``cp.problem``.

    The manifest is untrusted input (anyone who can write the folder wrote it): it must
    be JSON of the :class:`~cluster.manifest.Manifest` contract, version :data:`FORMAT`
    (:func:`cluster.manifest.decode`; the problem names the field); every file it names
    must be a plain name inside ``cp.path`` (never absolute, never ``..``), a regular file
    (not a link, FIFO or device), of the recorded size and, with ``checksums``, crc32.
    Each reader of checkpoints goes through here.
    """
    cp.manifest, cp.problem = None, None
    try:
        data = json.loads(_read_regular(cp.path / MANIFEST))
    except FileNotFoundError:
        cp.problem = "no manifest (the checkpoint was never completed)"
        return cp
    except (OSError, ValueError, CheckpointError) as e:
        cp.problem = f"manifest unreadable: {e}"
        return cp
    try:
        manifest = manifests.decode(data)
    except ContractError as e:
        cp.problem = str(e)
        return cp
    for name, meta in manifest.files.items():
        cp.problem = _file_problem(cp.path, name, meta, checksums)
        if cp.problem is not None:
            return cp
    cp.manifest = manifest
    return cp


def scan(directory: Path) -> list[Checkpoint]:
    """Every checkpoint folder, oldest first (not verified)."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit():
            found.append(Checkpoint(int(p.name[len(_PREFIX):]), p))
    return sorted(found, key=lambda c: c.id)


def newest_complete(directory: Path) -> Checkpoint | None:
    """The newest checkpoint that verifies; every newer broken one is named in the log."""
    for cp in reversed(scan(directory)):
        verify(cp)
        if cp.complete:
            return cp
        log.warning("skipping checkpoint %s: %s", cp.path, cp.problem,
                    extra={"event": "checkpoint_skipped", "path": cp.path, "problem": cp.problem})
    return None


def complete_manifests(directory: Path, limit: int) -> list[Manifest]:
    """Manifests of the ``limit`` newest complete checkpoints, newest first.

    Sizes are checked, checksums are not read, and nothing is logged: for readers that
    watch another process's checkpoints (which that process checks as it restores).
    A folder being written or pruned right now just does not count.
    """
    found: list[Manifest] = []
    try:
        for cp in reversed(scan(directory)):
            verify(cp, checksums=False)
            if cp.complete and cp.manifest is not None:
                found.append(cp.manifest)
                if len(found) == limit:
                    break
    except OSError:
        pass
    return found


def next_id(directory: Path) -> int:
    """An id above every existing folder's."""
    existing = scan(directory)
    return existing[-1].id + 1 if existing else 1


def prune(directory: Path, keep: int, newest_id: int) -> None:
    """Keep the ``keep`` newest complete checkpoints; drop older and abandoned ones."""
    complete = 0
    for cp in reversed(scan(directory)):
        if cp.id > newest_id:
            continue
        if (cp.path / MANIFEST).exists() and complete < keep:
            complete += 1
            continue
        shutil.rmtree(cp.path, ignore_errors=True)


def create_folder(directory: Path, cp_id: int) -> Path:
    """Make the folder of a new checkpoint (owner-only)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = directory / folder_name(cp_id)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700)
    return folder


def describe(cp: Checkpoint) -> Iterator[str]:
    """Lines for ``bspump-cluster checkpoints``."""
    m = cp.manifest
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.created)) \
        if m is not None and m.created is not None else "-"
    state = "complete" if cp.complete else f"INCOMPLETE: {cp.problem}"
    yield (f"{cp.id:>6}  {created}  workers={m.workers if m else '-'} "
           f"key_groups={m.key_groups if m else '-'}  {cp.size() / 1e6:8.2f} MB  {state}")
    if m is not None:
        yield f"        position={json.dumps(m.position)}  watermark={m.intake.watermark}"
    if m is not None and m.partition:
        yield f"        written by {m.owner or '-'}" + \
              ("  finished (the partition's end)" if m.finished else "")
