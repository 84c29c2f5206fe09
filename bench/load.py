"""Drive load from a separate process: ``wrk`` when installed, else ``bench.loadgen``.

The figures only ever compare two servers under the same generator in the same
run, so which generator ran is recorded next to the figure rather than corrected for.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""

_UNITS = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}


def wrk_path() -> str | None:
    """The ``wrk`` binary, or None when it is not installed."""
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_wrk(output: str) -> dict[str, float]:
    """Requests, non-2xx answers, socket errors and requests/s from wrk's summary."""
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)([kMG]?)", output)
    if not total or not rps:
        raise RuntimeError(f"cannot read wrk's output: {output.strip()[-300:]}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    bad = int(non2xx.group(1)) if non2xx else 0
    requests = int(total.group(1))
    seconds = float(total.group(2)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}.get(total.group(3), 1.0)
    return {
        "requests": requests,
        "non_2xx": bad,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "seconds": seconds,
        # Only successful answers count: a server that fails fast must not look fast.
        "rps": (requests - bad) / seconds if seconds else float(rps.group(1)),
    }


def closed_loop(
    url: str, body: bytes, *, connections: int = 32, duration: float = 5.0, threads: int = 1
) -> dict[str, Any]:
    """``connections`` keep-alive connections POST ``body`` back to back for ``duration`` s.

    wrk gets one thread: on two cores, the other core is the server's.
    """
    wrk = wrk_path()
    if wrk is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(_WRK_SCRIPT.format(body=_lua_string(body.decode())))
            script = f.name
        try:
            out = subprocess.run(
                [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", script, url],
                capture_output=True,
                text=True,
                timeout=duration + 60,
                check=True,
            ).stdout
        finally:
            Path(script).unlink(missing_ok=True)
        return {"generator": "wrk", **parse_wrk(out)}
    result = run_loadgen(
        [
            "closed",
            url,
            "--body",
            body.decode(),
            "--connections",
            str(connections),
            "--duration",
            str(duration),
        ],
        timeout=duration + 60,
    )
    return {"generator": "python", **result}


def loadgen_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "bench.loadgen", *args]


def run_loadgen(args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``bench.loadgen`` to completion and return the JSON it prints."""
    proc = subprocess.run(loadgen_cmd(args), capture_output=True, text=True, timeout=timeout)
    return read_loadgen(proc.returncode, proc.stdout, proc.stderr)


def start_loadgen(args: list[str]) -> subprocess.Popen[str]:
    """Start ``bench.loadgen`` in the background; finish with ``finish_loadgen``."""
    return subprocess.Popen(
        loadgen_cmd(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_loadgen(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"load generator still running after {timeout:.0f} s") from None
    return read_loadgen(proc.returncode, out, err)


def read_loadgen(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    if returncode != 0:
        raise RuntimeError(f"load generator failed ({returncode}): {stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result
