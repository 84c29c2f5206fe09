"""Run the benchmark suite: ``python -m bench.run [--quick] [--json FILE] [--only NAMES]``.

Prints the figures as a Markdown table and, with ``--json``, writes them with every
run's detail. A figure whose system cannot run here (the rulebus runtime not built
yet, Redis down) is reported as n/a with the reason; the others still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.figures import distributed, ingest, latency, mqtt, pipeline, rules, sql, storage
from bench.plan import FULL, QUICK, Plan, Sizes
from bench.report import Figure, table, write_json

# name -> what it measures; the order is the table's.
FIGURES: dict[str, Callable[[Plan], Figure | list[Figure]]] = {
    "ingest": ingest.measure,
    "pipeline": pipeline.measure_rulebus,
    "peer": pipeline.measure_peer,
    "rules": rules.measure,
    "latency": latency.measure,
    "sql": sql.measure,
    "storage": storage.measure,
    "distributed": distributed.measure,
    "mqtt": mqtt.measure,
}


def _size_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Sizes)]


def override(sizes: Sizes, settings: list[str]) -> Sizes:
    """``sizes`` with ``NAME=VALUE`` settings applied (``--set pipeline_n=300000``)."""
    changes: dict[str, float] = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        if name not in _size_names():
            raise ValueError(
                f"--set {setting}: no size {name!r}; choose from {', '.join(_size_names())}"
            )
        kind = type(getattr(sizes, name))
        try:
            changes[name] = kind(value)
        except ValueError:
            raise ValueError(f"--set {setting}: {value!r} is not a {kind.__name__}") from None
    return dataclasses.replace(sizes, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(FIGURES)}")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where runs keep their data (default: a temporary directory)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SIZE=N",
        help=f"change one size of the mode, for experiments: {', '.join(_size_names())}",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    try:
        sizes = override(sizes, args.set)
    except ValueError as exc:
        parser.error(str(exc))

    names = list(FIGURES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in FIGURES]
        if unknown:
            parser.error(
                f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}"
            )
    workdir = Path(tempfile.mkdtemp(prefix="rulebus-bench-", dir=args.workdir))
    plan = Plan(quick=args.quick, sizes=sizes, workdir=workdir)
    started = time.monotonic()
    figures: list[Figure] = []
    try:
        for name in names:
            t0 = time.monotonic()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            try:
                result = FIGURES[name](plan)
            except Exception as exc:  # one broken figure must not hide the others
                traceback.print_exc()
                result = Figure(name, name, error=f"{type(exc).__name__}: {exc}")
            got = result if isinstance(result, list) else [result]
            figures.extend(got)
            print(
                f"[bench] {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True
            )
            if name == "pipeline":
                plan.pipeline_events_per_s = got[0].value
        seconds = time.monotonic() - started
        mode = "quick" if args.quick else "full"
        if args.set:
            mode += f" with {', '.join(args.set)}"
        print(f"\nrulebus benchmarks, {mode} mode, {seconds:.0f} s\n", flush=True)
        print(table(figures), flush=True)
        if args.json:
            write_json(args.json, mode, seconds, figures)
    finally:
        if args.keep:
            print(f"[bench] work directory kept: {workdir}", file=sys.stderr)
        else:
            # Only now, not between figures: on ext4 without a journal (these
            # machines), the inode allocator skips inodes deleted in the last
            # 1-6 minutes, reading each one's table block to find that out. After
            # a run's hundreds of thousands of objects are deleted, creating
            # files costs several times more kernel time for minutes, which
            # would slow whichever figure comes next.
            t0 = time.monotonic()
            shutil.rmtree(workdir, ignore_errors=True)
            print(
                f"[bench] work directory removed in {time.monotonic() - t0:.0f} s",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
