"""What a test expects against what happened: its differences, and both sides for a diff.

Only what a test lists is checked, but what it lists is checked whole: a
listed table must hold exactly the rows given, a listed bucket exactly the
objects, a listed notification topic exactly the messages, ``published``
exactly the events, and ``sent`` exactly the messages of outbound actions.
One thing is checked whether listed or not: a rule that fails fails the
test, unless the test expects that failure (``error:``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rulebus import codec
from rulebus.testing.compare import Difference, compare, key_path, show
from rulebus.testing.runner import Outcome, RuleRun
from rulebus.testing.sandbox import stored
from rulebus.testing.spec import RuleExpectation, TestCase


@dataclass
class TestResult:
    """One test's differences, and the parts of expected and actual that it lists."""

    case: TestCase
    differences: list[Difference] = field(default_factory=list)
    expected: dict[str, Any] = field(default_factory=dict)
    actual: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.differences


def check(case: TestCase, outcome: Outcome) -> TestResult:
    result = TestResult(case)
    expect = case.expect
    _rules(result, outcome)
    for name, rows in expect.tables.items():
        actual = list(outcome.tables.rows[name].values())
        _section(result, "tables", name, rows, actual)
    for name, objects in expect.buckets.items():
        found = {key: _content(body) for key, body in outcome.objects.buckets[name].items()}
        _section(result, "buckets", name, objects, found)
    for name, messages in expect.notifications.items():
        sent = [n.body for n in outcome.notifier.sent if n.topic == name]
        _section(result, "notifications", name, messages, sent)
    if expect.published is not None:
        published = [
            {"topic": e.topic, "payload": codec.loads(e.raw) if e.raw else stored(e.payload)}
            for e in outcome.published
        ]
        differences, view = compare(expect.published, published, "published")
        result.differences += differences
        result.expected["published"] = expect.published
        result.actual["published"] = view
    if expect.sent is not None:
        _sent(result, expect.sent, outcome)
    return result


def _sent(result: TestResult, expected: list[Any], outcome: Outcome) -> None:
    """What outbound actions would have sent, compared on the keys each expected message
    lists (``target`` and ``details`` are optional)."""
    actual = []
    for n, sent in enumerate(outcome.sent):
        listed = expected[n] if n < len(expected) and isinstance(expected[n], dict) else {}
        message = {"action": sent.action, "payload": stored(sent.message.payload)}
        for key in ("target", "details"):
            if key in listed:
                message[key] = stored(getattr(sent.message, key))
        actual.append(message)
    differences, view = compare(expected, actual, "sent")
    result.differences += differences
    result.expected["sent"] = expected
    result.actual["sent"] = view


def _section(result: TestResult, kind: str, name: str, expected: Any, actual: Any) -> None:
    differences, view = compare(expected, actual, key_path(kind, name))
    result.differences += differences
    result.expected.setdefault(kind, {})[name] = expected
    result.actual.setdefault(kind, {})[name] = view


def _content(body: bytes) -> Any:
    """An object's content as a test gives it: JSON decoded, else text, else its size."""
    try:
        return codec.loads(body)
    except codec.DecodeError:
        pass
    try:
        return body.decode()
    except UnicodeDecodeError:
        return f"({len(body)} bytes, not text)"


def _rules(result: TestResult, outcome: Outcome) -> None:
    expectations = result.case.expect.rules
    for name, run in outcome.rules.items():
        want = expectations.get(name)
        if want is None and not run.failures:
            continue
        expected: dict[str, Any] = {}
        actual: dict[str, Any] = {}
        path = key_path("rules", name)
        if want is not None:
            _rule(result, want, run, path, expected, actual)
        if run.failures and (want is None or want.error is None):
            for message in run.failures:
                result.differences.append(
                    Difference(key_path(path, "error"), f"unexpected failure: {message}")
                )
            actual["error"] = run.failures
        result.expected.setdefault("rules", {})[name] = expected
        result.actual.setdefault("rules", {})[name] = actual


def _rule(
    result: TestResult,
    want: RuleExpectation,
    run: RuleRun,
    path: str,
    expected: dict[str, Any],
    actual: dict[str, Any],
) -> None:
    outputs = [stored(output) for output in run.outputs]
    found: list[Difference] = []
    if want.matched is not None:
        expected["matched"] = want.matched
        actual["matched"] = bool(outputs)
        if want.matched != bool(outputs):
            fired = f"it fired on {len(outputs)} event(s)" if outputs else "it did not fire"
            found.append(
                Difference(key_path(path, "matched"), f"expected {show(want.matched)}, {fired}")
            )
    if want.has_output:
        expected["output"] = want.output
        if len(outputs) == 1:
            differences, actual["output"] = compare(
                want.output, outputs[0], key_path(path, "output")
            )
            found += differences
        else:
            times = f"fired {len(outputs)} times: {show(outputs)}" if outputs else "did not fire"
            message = f"expected {show(want.output)}, the rule {times}"
            found.append(Difference(key_path(path, "output"), message))
            if outputs:
                actual["outputs"] = outputs
    if want.outputs is not None:
        expected["outputs"] = want.outputs
        differences, actual["outputs"] = compare(want.outputs, outputs, key_path(path, "outputs"))
        found += differences
    if want.error is not None:
        expected["error"] = want.error
        joined = "; ".join(run.failures)
        if want.error in joined:
            actual["error"] = want.error
        else:
            got = f"its failure was {joined!r}" if joined else "the rule did not fail"
            found.append(
                Difference(
                    key_path(path, "error"), f"expected a failure with {want.error!r}, {got}"
                )
            )
            if joined:
                actual["error"] = joined
    result.differences += found
