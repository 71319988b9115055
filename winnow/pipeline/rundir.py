"""The run directory: one folder per stage, committed atomically, with ``stage.json`` last.

A stage writes its files into a hidden temporary folder; when it has finished, ``stage.json``
is written there and the folder replaces the stage's folder by rename. A process killed at any
moment therefore leaves either the previous good folder or the new one, never a half-written
file: the only window (between the two renames of the swap) is repaired by :meth:`RunDir.recover`
on the next start, which puts the previous folder back. Each commit holds a lock
(:class:`filelock.FileLock`, an ``flock``) on ``.lock-<token>-<stage>`` while it runs, so that
``recover`` in another process (any command on the same run directory) leaves a live stage's
folders alone; the kernel drops the lock when its process dies, however it dies. Two commits of
the same stage do not wait for each other (each has its own token): the last to finish wins,
whole.

Resumable stages keep checkpoints in ``.work/<stage>/<cache key>/`` (see
:class:`DiskCheckpoints`): a checkpoint is only ever read back by the cache key that wrote it,
and :meth:`RunDir.clear_work` removes it once the stage has completed, whether it ran or was
found cached (a killed ``--force`` rerun followed by a cached one used to leave them behind).
Folders are made when the first checkpoint is saved and pruned when empty, so a stage that
fails before its first checkpoint leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, overload

from filelock import FileLock, Timeout

STAGE_JSON = "stage.json"


class StageMissing(FileNotFoundError):
    """An upstream artifact a command needs does not exist yet."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:  # not empty, or gone already
        pass


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def json_digest(obj: Any) -> str:
    """sha256 of a JSON-able object in canonical form."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON under a temporary name, fsync, then rename into place."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _lock_of(path: Path) -> Path:
    """The lock file of the commit that made ``.tmp-<token>-<stage>`` or ``.old-<token>-<stage>``."""
    _, token, stage = path.name.split("-", 2)
    return path.parent / f".lock-{token}-{stage}"


@contextmanager
def _ended(lock_file: Path) -> Iterator[bool]:
    """Whether the commit that holds ``lock_file`` has ended (its process finished or was killed),
    by a non-blocking try of its lock; if it has, the lock is held for the block, so that the
    commit's folders can be removed, and the lock file goes with it."""
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock_file.unlink(missing_ok=True)  # (while held: a probe never removes a live commit's file)
        lock.release()


def _commit_lock(root: Path, stage: str) -> FileLock:
    """A held lock on a new ``.lock-<token>-<stage>``. Another process's :meth:`RunDir.recover` may
    have probed and removed the file between its creation and our lock; an older filelock then
    holds a lock on a deleted file, so such a lock is let go and another token taken."""
    while True:
        lock = FileLock(root / f".lock-{uuid.uuid4().hex[:8]}-{stage}")
        lock.acquire()
        if Path(lock.lock_file).exists():
            return lock
        lock.release()


class RunDir:
    """A run directory: ``<root>/<stage>/`` folders, each complete or absent."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.recover()

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def record(self, stage: str) -> dict[str, Any] | None:
        """The stage's ``stage.json``, or None if the stage has not completed."""
        path = self.stage_dir(stage) / STAGE_JSON
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    @overload
    def path(self, stage: str, name: str, *, required: Literal[True] = True) -> Path: ...

    @overload
    def path(self, stage: str, name: str, *, required: bool) -> Path | None: ...

    def path(self, stage: str, name: str, *, required: bool = True) -> Path | None:
        """Path of an artifact of a completed stage; raises :class:`StageMissing` if absent."""
        p = self.stage_dir(stage) / name
        if self.record(stage) is not None and p.exists():
            return p
        if required:
            raise StageMissing(
                f"{p} does not exist: run `winnow {stage} --run-dir {self.root}` first (or `winnow run`)"
            )
        return None

    def recover(self) -> None:
        """Undo what a killed process left: restore a swapped-out stage folder, drop temporaries.

        Folders of a commit whose process is still running (its lock is held) are left alone.
        """
        for old in self.root.glob(".old-*"):
            with _ended(_lock_of(old)) as ended:
                if not ended:
                    continue
                target = self.stage_dir(old.name.split("-", 2)[2])
                if target.exists():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(old, target)
        for tmp in self.root.glob(".tmp-*"):
            with _ended(_lock_of(tmp)) as ended:
                if ended:
                    shutil.rmtree(tmp, ignore_errors=True)
        for lock in self.root.glob(".lock-*"):
            with _ended(lock):  # a killed commit's lock file, without folders: removed
                pass
        self.prune_work()

    @contextmanager
    def commit(self, stage: str, record: dict[str, Any]) -> Iterator[Path]:
        """Yield an empty temporary folder for the stage's files; on success, fill in the output
        digests, write ``stage.json`` and swap the folder into place. On error nothing changes."""
        lock = _commit_lock(self.root, stage)
        try:
            yield from self._commit(stage, record, Path(lock.lock_file).name.split("-", 2)[1])
        finally:
            Path(lock.lock_file).unlink(missing_ok=True)  # (while held, as in _ended)
            lock.release()

    def _commit(self, stage: str, record: dict[str, Any], token: str) -> Iterator[Path]:
        tmp = self.root / f".tmp-{token}-{stage}"
        tmp.mkdir()
        try:
            yield tmp
            outputs = {}
            for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
                outputs[f.relative_to(tmp).as_posix()] = file_digest(f)
            record = {**record, "outputs": outputs, "digest": json_digest(outputs)}
            write_json_atomic(tmp / STAGE_JSON, record)
            _fsync_dir(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        target = self.stage_dir(stage)
        old = self.root / f".old-{token}-{stage}"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(self.root)
        shutil.rmtree(old, ignore_errors=True)

    def work_dir(self, stage: str, key: str) -> Path:
        """Folder for a stage's resumable checkpoints under one cache key."""
        return self.root / ".work" / stage / key[:16]

    def stage_running(self, stage: str) -> bool:
        """Whether a process (this one included) is committing ``stage`` now: its lock is held."""
        running = False
        for lock in self.root.glob(f".lock-*-{stage}"):
            with _ended(lock) as ended:
                running |= not ended and lock.name.split("-", 2)[2] == stage
        return running

    def clear_work(self, stage: str, key: str) -> None:
        """Remove checkpoints once ``stage`` has completed under ``key``.

        ``key``'s own go, and so do other keys' (parameters the stage has since moved away from),
        unless another process is running the stage now: its checkpoints are in use.
        """
        if self.stage_running(stage):
            shutil.rmtree(self.work_dir(stage, key), ignore_errors=True)
        else:
            shutil.rmtree(self.root / ".work" / stage, ignore_errors=True)
        self.prune_work()

    def keep_checkpoints_only(self, folder: Path) -> None:
        """Remove all but the checkpoints (``*.pt``) from a stage's work folder, then empty folders.

        What a failed stage keeps: its checkpoints, for a rerun of the same key to resume from; not
        the scratch files an executor wrote beside them (Beam's temporary folders).
        """
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                elif not entry.name.endswith(".pt"):
                    entry.unlink(missing_ok=True)
        self.prune_work()

    def prune_work(self) -> None:
        """Remove empty checkpoint folders, deepest first, up to ``.work`` itself.

        A failed stage keeps the checkpoints it saved (a rerun resumes from them) but leaves no
        empty folder; :meth:`DiskCheckpoints.save` makes its folder again if one is pruned under it.
        """
        work = self.root / ".work"
        if not work.is_dir():
            return
        for folder in sorted((p for p in work.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir_if_empty(folder)
        _rmdir_if_empty(work)


# Fault injection for the resume tests: after this many checkpoint saves the process kills
# itself with SIGKILL, exactly as `kill -9` would, at a reproducible point.
KILL_AFTER_SAVES_ENV = "WINNOW_FAILPOINT_KILL_AFTER_SAVES"


class DiskCheckpoints:
    """:class:`winnow.stages.common.checkpoint.Checkpoints` on disk: one ``.pt`` file per key, written
    atomically and read back with ``torch.load(weights_only=True)`` (no pickle execution)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # made by the first save: a stage that never saves leaves no folder
        self.saves = 0

    def _file(self, key: str) -> Path:
        if not key.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"checkpoint key {key!r} must be alphanumeric with - or _")
        return self.folder / f"{key}.pt"

    def load(self, key: str) -> Any | None:
        import torch  # lazily: the CLI starts without torch

        path = self._file(key)
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def save(self, key: str, state: Any) -> None:
        import torch

        path = self._file(key)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        for attempt in range(3):
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                f = open(tmp, "wb")  # noqa: SIM115 (closed by the with below)
                break
            except FileNotFoundError:  # another command pruned the empty folder in between
                if attempt == 2:
                    raise
        with f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.saves += 1
        if self.saves == int(os.environ.get(KILL_AFTER_SAVES_ENV, "0")):
            os.kill(os.getpid(), signal.SIGKILL)
