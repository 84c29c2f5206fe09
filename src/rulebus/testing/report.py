"""The outcome of a test run: a diff per failing test and a summary line, or JSON for CI."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

from rulebus.testing.check import TestResult


def summary(results: Sequence[TestResult]) -> str:
    failed = sum(not r.passed for r in results)
    files = len({r.case.file for r in results})
    counts = f"{len(results) - failed} passed" + (f", {failed} failed" if failed else "")
    tests = "test" if len(results) == 1 else "tests"
    return f"{counts} ({len(results)} {tests} in {files} file{'s' * (files != 1)})"


def text(results: Sequence[TestResult], *, verbose: bool = False) -> str:
    """Each failing test (every test with ``verbose``), then the summary line."""
    blocks = []
    for result in results:
        if result.passed:
            if verbose:
                blocks.append(f"PASS {result.case.where}  {result.case.name}")
            continue
        lines = [f"FAIL {result.case.where}  {result.case.name}"]
        lines += [f"  {difference}" for difference in result.differences]
        lines += [f"  {line}" for line in diff(result)]
        blocks.append("\n".join(lines))
    blocks.append(summary(results))
    return "\n".join(blocks)


def diff(result: TestResult) -> list[str]:
    """A unified diff of what the test lists, expected against actual, as JSON."""
    return list(
        difflib.unified_diff(
            _lines(result.expected),
            _lines(result.actual),
            "expected",
            "actual",
            lineterm="",
        )
    )


def _lines(document: dict[str, Any]) -> list[str]:
    return json.dumps(document, indent=2, ensure_ascii=False, default=repr).splitlines()


def as_json(results: Sequence[TestResult]) -> str:
    failed = sum(not r.passed for r in results)
    return json.dumps(
        {
            "passed": len(results) - failed,
            "failed": failed,
            "tests": [
                {
                    "file": r.case.file,
                    "line": r.case.line,
                    "name": r.case.name,
                    "passed": r.passed,
                    "differences": [{"path": d.path, "message": d.message} for d in r.differences],
                    "diff": "\n".join(diff(r)),
                }
                for r in results
            ],
        },
        ensure_ascii=False,
        indent=2,
    )
