"""Processes under test: start them, wait until they serve, sample their memory, stop them.

Every server runs in its own process with stdout and stderr in a log file, so a
chatty server can never block on a full pipe, and a failed start can quote its log.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 0.5) -> bool:
    """True when ``GET url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError):
        return False


class StartError(RuntimeError):
    """A server did not come up; the message quotes the end of its log."""


class Server:
    """One server process, started by ``start()`` and always stopped by ``stop()``.

    Readiness is ``GET health_url`` answering 2xx or, when given, a line of its
    output matching ``ready_pattern`` (``rulebus up`` prints ``listening on ...``).
    """

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        *,
        health_url: str | None = None,
        ready_pattern: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_path
        self.health_url = health_url
        self.ready_pattern = re.compile(ready_pattern) if ready_pattern else None
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not started"
        return self.proc.pid

    def start(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it until stop()
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # so stop() can signal the whole process group
            )
        except OSError as exc:
            raise StartError(f"{self.name}: cannot run {self.cmd[0]}: {exc}") from exc
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(
                    f"{self.name} exited with code {self.proc.returncode} before it was ready: "
                    f"{self.log_tail()}"
                )
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise StartError(
            f"{self.name} not ready after {self.start_timeout:.0f} s: {self.log_tail()}"
        )

    def _ready(self) -> bool:
        if self.ready_pattern is not None:
            with contextlib.suppress(OSError):
                if self.ready_pattern.search(self.log_path.read_text(errors="replace")):
                    return True
        return self.health_url is not None and http_ok(self.health_url)

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        # Children that outlived their parent (a Celery pool, say) share its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[tuple[Server, ...]]:
    """Start the servers in order; stop all of them, in reverse, whatever happens."""
    started: list[Server] = []
    try:
        for server in servers:
            started.append(server.start())
        yield servers
    finally:
        for server in reversed(started):
            server.stop()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(_children(p))
    return out


def _kib_field(pid: int, file: str, field: str) -> int:
    """A ``field: N kB`` line of ``/proc/<pid>/<file>``, in bytes; 0 once the process is gone."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/{file}") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes(pid: int) -> int:
    return _kib_field(pid, "status", "VmRSS:")


def pss_bytes(pid: int) -> int:
    """Proportional set size: the RSS with each shared page split among its sharers."""
    return _kib_field(pid, "smaps_rollup", "Pss:")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of ``pid`` so far, or zeros once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0, 0.0
    # Fields 14 and 15 of proc(5), counted after the command name.
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def label(pid: int) -> str:
    """A short name for a process: its command line's most telling words."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return str(pid)
    words = [a for a in argv[1:] if not a.startswith("-") and "/" not in a] or argv[:1]
    partition = next((a for a in argv if "/" in a and a.replace("/", "").isdigit()), "")
    return " ".join([*words[:2], partition]).strip() + f" ({pid})"


class PeakRss:
    """Samples the RSS of some process trees every ``interval`` seconds in a thread.

    It also keeps, by process, the peak RSS (``peaks``) and the user and system
    CPU seconds used since ``__enter__`` (``cpu``): they tell which process a
    change made cheaper, and whether in Python or in the kernel.
    """

    def __init__(self, pids: Sequence[int], interval: float = 0.1) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self.cpu: dict[str, dict[str, float]] = {}
        self.peaks: dict[str, float] = {}  # MB, by label
        self._start: dict[int, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        processes = [p for root in self.pids for p in tree(root)]
        sizes = {p: rss_bytes(p) for p in processes}
        self.peak = max(self.peak, sum(sizes.values()))
        # Each process's RSS counts the shared libraries again (about 18 MB
        # each here); the PSS sum is what the processes take together.
        self.peak_pss = max(self.peak_pss, sum(pss_bytes(p) for p in processes))
        for p in processes:
            name = label(p)
            self.peaks[name] = max(self.peaks.get(name, 0.0), round(sizes[p] / 2**20, 1))
            user, system = cpu_seconds(p)
            if user or system:
                user0, system0 = self._start.setdefault(p, (user, system))
                self.cpu[name] = {
                    "user": round(user - user0, 2),
                    "sys": round(system - system0, 2),
                }

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._sample()
        self.cpu = {}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
