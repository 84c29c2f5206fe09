"""A whole run: load an app's test files, run every test, return the results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rulebus.errors import RulebusError
from rulebus.functions import FunctionHost
from rulebus.template.model import App
from rulebus.testing.check import TestResult, check
from rulebus.testing.runner import Sandbox
from rulebus.testing.spec import TestCase, find_test_files, load_tests


def load_cases(app: App, files: Sequence[Path] = (), select: str | None = None) -> list[TestCase]:
    """The tests of ``files`` (by default the app's ``tests/*.yaml``) whose name has ``select``."""
    if not files:
        folder = Path(app.file).parent
        files = find_test_files(folder)
        if not files:
            raise RulebusError(f"no test files in {folder / 'tests'} (tests/*.yaml)")
    cases = [case for file in files for case in load_tests(file, app)]
    if select is not None:
        cases = [case for case in cases if select in case.name]
        if not cases:
            raise RulebusError(f"no test's name contains {select!r}")
    return cases


async def run_cases(app: App, cases: Sequence[TestCase]) -> list[TestResult]:
    """Run each test in a sandbox of its own; the app's functions are loaded once for all."""
    functions = FunctionHost(app.root, app.functions)
    try:
        return [check(case, await Sandbox(app, functions).run(case)) for case in cases]
    finally:
        functions.close()
