"""Figure 4: the same stream against 10 rules and against 10,000 rules.

Each setting is a generated app folder: one table, N rules ``SELECT * FROM
'bench/r<i>'`` with a ``table`` action, and the exchange's ingest route publishing to
``bench/${type}``. Every event has type ``r<N-1>``, so exactly one rule matches: the
last one declared, the worst place for a router that scans. Both apps run at once,
each on a fresh data directory, and take turns; each run ends when all of its N rows
exist.
"""

from __future__ import annotations

from pathlib import Path

from bench.deploy import Unavailable, rulebus
from bench.figures.pipeline import run_once
from bench.plan import Plan
from bench.proc import free_port
from bench.report import Figure, median, ratio

SMALL, LARGE = 10, 10_000
TARGET = 0.8

_HEAD = """\
name: bench-rules-{n}
tables:
  events:
    key: [id]
api:
  routes:
    - path: /event
      batch_path: /events
      topic: bench/${{type}}
      required: [type]
rules:
"""

_RULE = """\
  r{i}:
    sql: "SELECT * FROM 'bench/r{i}'"
    actions:
      - table: {{name: events}}
"""


def write_app(directory: Path, n_rules: int) -> Path:
    """An app folder with ``n_rules`` rules of distinct topic filters."""
    directory.mkdir(parents=True, exist_ok=True)
    text = _HEAD.format(n=n_rules) + "".join(_RULE.format(i=i) for i in range(n_rules))
    (directory / "rulebus.yaml").write_text(text)
    return directory


def measure(plan: Plan) -> Figure:
    n = plan.sizes.rules_n
    fig = Figure(
        "4_rules",
        f"4. {LARGE:,} rules ÷ {SMALL} rules",
        unit="events/s",
        baseline_name=f"{SMALL} rules",
        target=f"≥ {TARGET}",
    )
    workdir = plan.run_dir("rules")
    apps = {count: write_app(workdir / f"app-{count}", count) for count in (SMALL, LARGE)}
    eps: dict[int, list[float]] = {SMALL: [], LARGE: []}
    try:
        # Both apps run side by side for all the runs (an idle one costs next to
        # nothing), so the settings take turns without restarting: loading
        # 10,000 rules takes seconds in each of the three processes.
        with (
            rulebus(apps[SMALL], workdir / f"data-{SMALL}-{free_port()}", bucket=None) as small,
            rulebus(apps[LARGE], workdir / f"data-{LARGE}-{free_port()}", bucket=None) as large,
        ):
            for i in range(plan.sizes.runs):
                for count, d in ((SMALL, small), (LARGE, large)):
                    result = run_once(
                        d,
                        None,
                        plan,
                        n,
                        seed=400 + i,
                        alerts=0,
                        event_type=f"r{count - 1}",
                        rows_before=i * n,
                    )
                    eps[count].append(result["events_per_s"])
    except (Unavailable, RuntimeError) as exc:
        fig.error = str(exc)
    fig.runs = {f"rules_{count}_eps": values for count, values in eps.items()}
    fig.value = median(eps[LARGE])
    fig.baseline = median(eps[SMALL])
    fig.ratio = ratio(fig.value, fig.baseline)
    fig.met = None if fig.ratio is None else fig.ratio >= TARGET
    return fig
