"""Profile rulebus under figure 2's load: ``python -m bench.profile [--n N] [--out FILE]``.

Runs the exchange pipeline once, exactly as figure 2 does, with ``py-spy record``
attached to the ``rulebus up`` process (and its children), then prints where the
samples fell: the functions with the most samples on top of the stack (self) and
the rulebus functions with the most samples anywhere in the stack (inclusive).
The raw collapsed stacks stay in ``--out`` for a flame graph (e.g. speedscope.app).
Needs ``pip install py-spy`` and permission to ptrace (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.deploy import receiver, rulebus_exchange
from bench.events import expected_alerts
from bench.figures.pipeline import run_once
from bench.plan import QUICK, Plan
from bench.signing import new_secret

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _short(frame: str) -> str:
    """``func (path/to/rulebus/engine/x.py:12)`` -> ``rulebus/engine/x.py:func``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for anchor in ("/src/", "/site-packages/", "/lib/python3"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    return f"{path}:{match['func']}"


def summarize(collapsed: Path, top: int = 15) -> str:
    """Self and inclusive sample counts from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        # The first frames are the process and thread names that py-spy adds.
        frames = [f for f in frames if ".py:" in f] or frames
        own[frames[-1]] += n
        for frame in set(frames):
            if frame.startswith("rulebus/"):
                inclusive[frame] += n
    lines = [f"{total} samples", "", "| self | function |", "|---:|---|"]
    lines += [f"| {n / total:.1%} | `{f}` |" for f, n in own.most_common(top)]
    lines += ["", "| inclusive | rulebus function |", "|---:|---|"]
    lines += [f"| {n / total:.1%} | `{f}` |" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--n", type=int, default=QUICK.pipeline_n, help="events to post")
    parser.add_argument("--out", type=Path, default=Path("rulebus-profile.txt"))
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL (where Python CPU goes); "
        "by default every active thread, including ones blocked in I/O",
    )
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        parser.error("py-spy is not installed: pip install py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="rulebus-profile-"))
    plan = Plan(quick=True, sizes=QUICK, workdir=workdir)
    secret = new_secret()
    seed = 900
    try:
        with receiver(workdir, secret) as hook, rulebus_exchange(workdir, hook, secret) as d:
            recorder = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(d.pids[0]),
                    "--subprocesses",
                    "--format",
                    "raw",
                    "--rate",
                    str(args.rate),
                    "--output",
                    str(args.out),
                    "--nonblocking",
                    *(["--gil"] if args.gil else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                result = run_once(d, hook, plan, args.n, seed, expected_alerts(args.n, seed))
            finally:
                recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                _, err = recorder.communicate(timeout=60)
        if not args.out.exists():
            print(f"py-spy wrote nothing: {err.strip()[-500:]}", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{args.n:,} events in {result['seconds']:.2f} s "
        f"({result['events_per_s']:,.0f} events/s under the profiler)\n"
    )
    print(summarize(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
