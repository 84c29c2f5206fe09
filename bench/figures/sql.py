"""Figure 6: rule SQL evaluation on one core, measured by bench/sql_eval.py.

That module belongs to the rules-SQL work (issue 2); the suite only calls its
``measure(quick)`` and holds each figure against the issue's target.
"""

from __future__ import annotations

import importlib

from bench.plan import Plan
from bench.report import Figure, ratio

# Targets from issue 2, matched by a word in the name sql_eval gives each figure.
TARGETS = {"where": 300_000.0, "filter": 300_000.0, "projection": 100_000.0}


def _target(name: str) -> float | None:
    lowered = name.lower()
    return next((t for word, t in TARGETS.items() if word in lowered), None)


def measure(plan: Plan) -> list[Figure]:
    try:
        sql_eval = importlib.import_module("bench.sql_eval")
        results = sql_eval.measure(plan.quick)
    except Exception as exc:  # not written yet, or rulebus.sql not ready
        return [Figure("6_sql", "6. SQL evaluation", error=f"{type(exc).__name__}: {exc}")]
    figures = []
    for name, value in results.items():
        target = _target(name)
        fig = Figure(f"6_sql_{name}", f"6. SQL: {name}", unit="eval/s", value=float(value))
        if target is not None:
            fig.baseline, fig.baseline_name = target, "issue 2 target"
            fig.ratio = ratio(fig.value, target)
            fig.target = f"≥ {target:,.0f}/s"
            fig.met = fig.value >= target
        figures.append(fig)
    return figures
