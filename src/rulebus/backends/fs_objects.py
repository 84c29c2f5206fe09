"""The embedded object store: one directory per bucket, one file per object.

Keys are validated before they touch the file system, and the resolved path
is checked to stay inside the bucket, so no key can escape it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from rulebus.errors import BadInput, NotFound

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SEGMENT = re.compile(r"^[A-Za-z0-9!_.*'()=@,:+-]+$")
MAX_KEY_BYTES = 1024


def validate_bucket(name: str) -> str:
    """S3's bucket naming rules, minus the ones about IP addresses."""
    if not _BUCKET.match(name) or ".." in name:
        raise BadInput(
            f"invalid bucket name {name!r}: use 3-63 lowercase letters, digits, '.' and '-'"
        )
    return name


def validate_key(key: str) -> str:
    """A key is '/'-separated segments of S3's safe characters; none is '.' or '..'."""
    if not key:
        raise BadInput("invalid object key: empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise BadInput(f"invalid object key: longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or segment.startswith("."):
            raise BadInput(f"invalid object key {key!r}: empty, '.' or '..' path segment")
        if not _SEGMENT.match(segment):
            raise BadInput(
                f"invalid object key {key!r}: use letters, digits and !_.*'()=@,:+- between '/'"
            )
    return key


def _syncfs() -> object:
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    return getattr(libc, "syncfs", None)


class FileObjectStore:
    """The :class:`~rulebus.backends.base.ObjectStore` on a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirty: set[Path] = set()
        self._syncfs = _syncfs()

    async def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        await self.flush()

    def _bucket(self, bucket: str) -> Path:
        path = self.root / validate_bucket(bucket)
        if not path.is_dir():
            raise NotFound(f"no bucket named {bucket!r}")
        return path

    def _path(self, bucket: str, key: str) -> Path:
        base = self._bucket(bucket)
        path = base / validate_key(key)
        if not path.resolve().is_relative_to(base.resolve()):
            raise BadInput(f"invalid object key {key!r}: escapes the bucket")
        return path

    async def create_bucket(self, name: str) -> None:
        (self.root / validate_bucket(name)).mkdir(parents=True, exist_ok=True)

    async def put(self, bucket: str, key: str, body: bytes) -> None:
        path = self._path(bucket, key)
        await asyncio.to_thread(self._write, path, body)
        self._dirty.add(path)

    @staticmethod
    def _write(path: Path, body: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half an object, and a crash
        # leaves either the old object or the new one.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, path)

    async def flush(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        await asyncio.to_thread(self._sync, dirty)

    def _sync(self, paths: set[Path]) -> None:
        # One syncfs per batch of deliveries is far cheaper than an fsync per
        # object; fall back to fsyncing each file and directory without it.
        if self._syncfs is not None:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                self._syncfs(fd)  # type: ignore[operator]
            finally:
                os.close(fd)
            return
        for path in paths | {p.parent for p in paths}:
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    async def get(self, bucket: str, key: str) -> bytes:
        path = self._path(bucket, key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no object {key!r} in bucket {bucket!r}") from None

    async def list(self, bucket: str, prefix: str = "") -> AsyncIterator[str]:
        base = self._bucket(bucket)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = Path(dirpath).relative_to(base)
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                key = name if rel == Path(".") else f"{rel.as_posix()}/{name}"
                if key.startswith(prefix):
                    yield key
