"""The embedded object store: one directory per bucket, one file per object.

Keys are validated before they touch the file system, and the resolved path
is checked to stay inside the bucket, so no key can escape it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from rulebus.backends.base import validate_bucket, validate_key
from rulebus.backends.wakeups import Outcome, settle_from_thread
from rulebus.errors import ActionError, NotFound

_O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # Linux only
_TMPFILE = _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
# What open() says where the file system or kernel has no O_TMPFILE.
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
# A write refused for want of room (or quota): retryable, it fits once there is room.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}
# linkat() follows the /proc/self/fd link only when called with a directory
# fd, which os.link does only when given one.
_ROOT_FD = os.open("/", os.O_RDONLY | os.O_CLOEXEC)


def _write_all(fd: int, body: bytes) -> None:
    view = memoryview(body)
    while view:
        view = view[os.write(fd, view) :]


def _syncfs() -> object:
    # The C library this process already has loaded; find_library would
    # start a subprocess to look for it.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return getattr(libc, "syncfs", None)


class _FileWriter:
    """One thread that writes files handed to it, many per wake-up.

    A thread hop per object would cost more than the write itself; queued
    writes are taken together and their callers woken together.
    """

    def __init__(self, write: Callable[[str, bytes], None], threads: int = 4) -> None:
        self._write = write
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Creating a file is mostly waiting on the file system, which a few
        # threads overlap; the GIL is released meanwhile.
        self._threads = [
            threading.Thread(target=self._run, name=f"object-writer-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            if not thread.is_alive():
                thread.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    def submit(self, path: str, body: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((path, body, future, loop))
        return future

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 64:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            outcomes: list[Outcome] = []
            stopping = False
            for i, item in enumerate(batch):
                if item is None:
                    # Another thread's stop signal may have been taken too.
                    for other in batch[i + 1 :]:
                        self._queue.put(other)
                    stopping = True
                    break
                path, body, future, loop = item
                try:
                    self._write(path, body)
                except Exception as exc:
                    outcomes.append((loop, future, True, exc))
                else:
                    outcomes.append((loop, future, False, None))
            settle_from_thread(outcomes)
            if stopping:
                return


class FileObjectStore:
    """The :class:`~rulebus.backends.base.ObjectStore` on a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirty: set[str] = set()
        self._syncfs = _syncfs()
        self._buckets: dict[str, Path] = {}
        self._tmpfile = _O_TMPFILE != 0
        self._writer = _FileWriter(self._write)
        self._flushing = asyncio.Lock()

    async def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._writer.start()

    async def close(self) -> None:
        await self.flush()
        self._writer.stop()

    def _bucket(self, bucket: str) -> Path:
        path = self._buckets.get(bucket)
        if path is None:
            path = self.root / validate_bucket(bucket)
            if not path.is_dir():
                raise NotFound(f"no bucket named {bucket!r}")
            self._buckets[bucket] = path
        return path

    def _path(self, bucket: str, key: str) -> str:
        # validate_key admits no '.', '..' or empty segment, and buckets are
        # plain directories made by create_bucket, so the joined path stays
        # inside the bucket without resolving it on every put.
        return f"{self._bucket(bucket)}/{validate_key(key)}"

    async def create_bucket(self, name: str) -> None:
        path = self.root / validate_bucket(name)
        path.mkdir(parents=True, exist_ok=True)
        self._buckets[name] = path

    async def put(self, bucket: str, key: str, body: bytes) -> None:
        (error,) = await self.put_many(bucket, [(key, body)])
        if error is not None:
            raise error

    def _write(self, path: str, body: bytes) -> None:
        # A reader never sees half an object, and a crash leaves either the
        # old object or the new one. The file is written without a name
        # (O_TMPFILE) and linked into place once whole: one directory change
        # per object instead of two (create, then rename), which is most of
        # what an object costs the kernel. A crash leaves no stray file.
        # Where that is not possible (an object being replaced, a file system
        # without O_TMPFILE), a temporary file is renamed over it.
        folder, _, name = path.rpartition("/")
        fd = self._open_unnamed(folder) if self._tmpfile else None
        if fd is not None:
            try:
                _write_all(fd, body)
                os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=_ROOT_FD, follow_symlinks=True)
                return
            except FileExistsError:
                pass  # replacing an object: rename over it below
            except OSError as exc:
                # No /proc to link from, or linking refused: rename instead.
                if exc.errno not in (errno.ENOENT, errno.EXDEV, errno.EPERM):
                    raise
                self._tmpfile = False
            finally:
                os.close(fd)
        tmp = f"{folder}/.{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            try:
                _write_all(fd, body)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _open_unnamed(self, folder: str) -> int | None:
        """An unnamed file in ``folder`` (made if missing), or None where there are none."""
        for attempt in range(2):
            try:
                return os.open(folder, _TMPFILE, 0o644)
            except FileNotFoundError:
                if attempt:
                    raise
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                self._tmpfile = False
                return None
        return None

    async def put_many(
        self, bucket: str, objects: Sequence[tuple[str, bytes]]
    ) -> list[Exception | None]:
        pending: list[tuple[int, str, asyncio.Future[None]]] = []
        errors: list[Exception | None] = [None] * len(objects)
        for i, (key, body) in enumerate(objects):
            try:
                path = self._path(bucket, key)
            except Exception as exc:
                errors[i] = exc
                continue
            pending.append((i, path, self._writer.submit(path, body)))
        for i, path, future in pending:
            try:
                await future
            except Exception as exc:
                full = isinstance(exc, OSError) and exc.errno in _NO_ROOM
                errors[i] = exc
                if full:
                    message = f"cannot store the object: the disk under {self.root} is full"
                    errors[i] = ActionError(message)
                elif isinstance(exc, NotADirectoryError | IsADirectoryError):
                    key = objects[i][0]
                    errors[i] = ActionError(
                        f"object key {key!r} conflicts with an existing key: the file store"
                        " cannot hold a key and keys below it (S3 can)",
                        retryable=False,
                    )
            else:
                self._dirty.add(path)
        return errors

    async def flush(self) -> None:
        # Under the lock, a flush that finds nothing dirty because another
        # flush took the paths still returns only after that one has synced.
        async with self._flushing:
            if not self._dirty:
                return
            dirty, self._dirty = self._dirty, set()
            try:
                await asyncio.to_thread(self._sync, dirty)
            except BaseException:
                self._dirty |= dirty
                raise

    def _sync(self, paths: set[str]) -> None:
        # One syncfs per batch of deliveries is far cheaper than an fsync per
        # object; fall back to fsyncing each file and directory without it.
        if self._syncfs is not None:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                if self._syncfs(fd) != 0:  # type: ignore[operator]
                    code = ctypes.get_errno()
                    raise OSError(code, f"syncfs: {os.strerror(code)}")
            finally:
                os.close(fd)
            return
        for path in paths | {os.path.dirname(p) for p in paths}:
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    async def get(self, bucket: str, key: str) -> bytes:
        path = self._path(bucket, key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no object {key!r} in bucket {bucket!r}") from None

    async def list(self, bucket: str, prefix: str = "") -> AsyncIterator[str]:
        # In byte order of the whole key, as S3 lists: a folder's entries
        # are sorted with '/' after a folder's name, so "a/b" comes between
        # "a.json" and "a_z".
        stack = [(self._bucket(bucket), "")]
        pending: list[tuple[str, Path | None]] = []
        while stack:
            folder, rel = stack.pop()
            entries: list[tuple[str, Path | None]] = []
            with os.scandir(folder) as scan:
                for entry in scan:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        entries.append((f"{rel}{entry.name}/", Path(entry.path)))
                    else:
                        entries.append((f"{rel}{entry.name}", None))
            pending = sorted([*pending, *entries], key=lambda e: e[0].encode(), reverse=True)
            while pending:
                key, path = pending.pop()
                if path is not None:
                    stack.append((path, key))
                    break
                if key.startswith(prefix):
                    yield key


def from_url(url: str, data_dir: Path, **options: object) -> FileObjectStore:
    """``file``: one folder per bucket under ``data_dir/buckets``."""
    return FileObjectStore(data_dir / "buckets")
