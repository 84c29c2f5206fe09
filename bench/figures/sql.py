"""Figure 6: rule SQL evaluation on one core, measured by bench/sql_eval.py.

That module belongs to the rules-SQL work (issue 2). Its ``measure(quick)`` returns
``sql_<case>_evals_per_s`` for each rule and ``baseline_<...>_evals_per_s`` for the
same work written by hand in Python, in the same order; each rule is reported
against its hand-written baseline, and held against issue 2's absolute target.
"""

from __future__ import annotations

import importlib

from bench.plan import Plan
from bench.report import Figure, ratio

# Issue 2's targets, by the case name in ``sql_<case>_evals_per_s``.
TARGETS = {"where": 300_000.0, "projection": 100_000.0}
TITLES = {
    "where": "6. SQL: WHERE price > 100 AND type = 'buy'",
    "projection": "6. SQL: 10-field projection, 3 functions",
}


def measure(plan: Plan) -> list[Figure]:
    try:
        sql_eval = importlib.import_module("bench.sql_eval")
        results: dict[str, float] = sql_eval.measure(plan.quick)
    except Exception as exc:  # not written yet, or rulebus.sql not ready
        return [Figure("6_sql", "6. SQL evaluation", error=f"{type(exc).__name__}: {exc}")]
    rules = [k for k in results if k.startswith("sql_")]
    baselines = [k for k in results if k.startswith("baseline_")]
    figures = []
    for i, key in enumerate(rules):
        case = key.removeprefix("sql_").removesuffix("_evals_per_s")
        fig = Figure(
            f"6_sql_{case}",
            TITLES.get(case, f"6. SQL: {case}"),
            unit="eval/s",
            value=float(results[key]),
        )
        if i < len(baselines):
            fig.baseline = float(results[baselines[i]])
            fig.baseline_name = "hand-written Python"
            fig.ratio = ratio(fig.value, fig.baseline)
        target = TARGETS.get(case)
        if target is not None:
            fig.target = f"≥ {target:,.0f}/s"
            fig.met = fig.value >= target
        figures.append(fig)
    return figures
