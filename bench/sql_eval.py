"""Rule SQL evaluation speed on one core (figure 6 of the suite; issue 2's targets).

Run alone: ``.venv/bin/python bench/sql_eval.py [--quick] [--json FILE]``.

Two rules run on an already-decoded event of about 200 bytes:

- ``where``: ``SELECT * FROM 'event/+' WHERE price > 100 AND type = 'buy'``
  (target: at least 300,000 evaluations/s);
- ``projection``: ten output fields, three of them computed by functions
  (target: at least 100,000 evaluations/s).

The machine is shared and noisy, so each figure is also measured against a
hand-written Python function doing the same work on the same dict, interleaved in
the same run. Each figure is the median of the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rulebus.sql import EvalContext, compile_rule

EVENT: dict[str, Any] = {
    "id": "2f1c6f0e-8a43-4c57-9d2b-6f1e0c1a9b7d",
    "type": "buy",
    "symbol": "ACME",
    "price": 123.45,
    "qty": 250,
    "account": "acct-000042",
    "venue": "XNYS",
    "currency": "USD",
    "ts": 1715250000123,
    "note": "limit order",
}

WHERE_SQL = "SELECT * FROM 'event/+' WHERE price > 100 AND type = 'buy'"
PROJECTION_SQL = (
    "SELECT id, type, symbol, price, qty, account AS acct, venue, upper(symbol) AS sym,"
    " round(price) AS rounded, concat(type, '-', symbol) AS kind FROM 'event/+'"
)

TARGETS = {"sql_where_evals_per_s": 300_000.0, "sql_projection_evals_per_s": 100_000.0}


def handwritten_condition(event: dict[str, Any]) -> object:
    """The WHERE rule written by hand: what the compiled rule is compared with."""
    price = event.get("price")
    if type(price) in (int, float) and price > 100 and event.get("type") == "buy":
        return event
    return None


def handwritten_mapping(event: dict[str, Any]) -> object:
    """The projection written by hand."""
    return {
        "id": event["id"],
        "type": event["type"],
        "symbol": event["symbol"],
        "price": event["price"],
        "qty": event["qty"],
        "acct": event["account"],
        "venue": event["venue"],
        "sym": event["symbol"].upper(),
        "rounded": round(event["price"]),
        "kind": event["type"] + "-" + event["symbol"],
    }


def _rate(function: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        function()
    return n / (time.perf_counter() - start)


def measure(quick: bool) -> dict[str, float]:
    """Evaluations per second of both rules and of their hand-written baselines."""
    n, runs = (30_000, 3) if quick else (300_000, 5)
    ctx = EvalContext(topic="event/buy")
    where_rule = compile_rule(WHERE_SQL)
    projection_rule = compile_rule(PROJECTION_SQL)
    assert where_rule.evaluate(EVENT, ctx) is EVENT
    assert projection_rule.evaluate(EVENT, ctx) == handwritten_mapping(EVENT)

    cases: dict[str, Callable[[], object]] = {
        "sql_where_evals_per_s": lambda: where_rule.evaluate(EVENT, ctx),
        "baseline_handwritten_condition_evals_per_s": lambda: handwritten_condition(EVENT),
        "sql_projection_evals_per_s": lambda: projection_rule.evaluate(EVENT, ctx),
        "baseline_handwritten_mapping_evals_per_s": lambda: handwritten_mapping(EVENT),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        # Interleaved, so that a noisy neighbour slows both sides of a ratio alike.
        for name, case in cases.items():
            samples[name].append(_rate(case, n))
    return {name: statistics.median(values) for name, values in samples.items()}


def _table(results: dict[str, float]) -> str:
    pairs = (
        ("where", "sql_where_evals_per_s", "baseline_handwritten_condition_evals_per_s"),
        ("projection", "sql_projection_evals_per_s", "baseline_handwritten_mapping_evals_per_s"),
    )
    lines = [f"{'rule':<11}{'sql eval/s':>13}{'python eval/s':>15}{'ratio':>8}{'target':>11}  met"]
    for label, sql, baseline in pairs:
        value, base, target = results[sql], results[baseline], TARGETS[sql]
        lines.append(
            f"{label:<11}{value:>13,.0f}{base:>15,.0f}{value / base:>8.2f}"
            f"{target:>11,.0f}  {'yes' if value >= target else 'NO'}"
        )
    return "\n".join(lines)


def main() -> None:
    """Command line: print the table, optionally write the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    results = measure(args.quick)
    print(_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
