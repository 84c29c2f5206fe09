"""Figure 1: durable single-event ingest against the bare HTTP stack's ceiling.

Both servers run at once and take turns (bare, rulebus, bare, rulebus, ...) under
the same generator, 32 connections and the same body, so drift in the machine's
speed hits both alike. After each rulebus turn the suite waits until the engine has
caught up (its table stops growing) so the next turn starts on a quiet machine.
"""

from __future__ import annotations

import time
from typing import Any

from bench import load
from bench.deploy import Deployment, Unavailable, bare_stack, receiver, rulebus_exchange
from bench.events import SINGLE_BODY
from bench.plan import Plan
from bench.report import Figure, median, ratio
from bench.signing import new_secret

TARGET = 0.80


def wait_quiet(deployment: Deployment, expected: int, timeout: float = 120.0) -> int:
    """Wait until the table holds ``expected`` rows, or stops growing for 2 s."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        rows = deployment.table.count()
        if rows >= expected:
            return rows
        if rows != last:
            last, last_change = rows, time.monotonic()
        elif time.monotonic() - last_change > 2.0:
            return rows
        time.sleep(0.1)
    return last


def measure(plan: Plan) -> Figure:
    s = plan.sizes
    fig = Figure(
        "1_ingest",
        "1. single-event ingest ÷ bare stack",
        unit="req/s",
        baseline_name="bare Starlette 204",
        target=f"≥ {TARGET}",
    )
    bare_rps: list[float] = []
    rulebus_rps: list[float] = []
    workdir = plan.run_dir("ingest")
    secret = new_secret()

    def turn(deployment: Deployment) -> dict[str, Any]:
        return load.closed_loop(
            deployment.single_url, SINGLE_BODY, connections=s.connections, duration=s.ingest_seconds
        )

    with bare_stack(workdir) as bare, receiver(workdir, secret) as hook:
        try:
            with rulebus_exchange(workdir, hook, secret) as rb:
                accepted = 0
                for _ in range(s.runs):
                    result = turn(bare)
                    bare_rps.append(float(result["rps"]))
                    result = turn(rb)
                    rulebus_rps.append(float(result["rps"]))
                    fig.runs.setdefault("rulebus_detail", []).append(result)
                    accepted += int(result["requests"]) - int(result.get("non_2xx", 0))
                    wait_quiet(rb, accepted)
                fig.notes.append(f"generator: {result['generator']}")
        except Unavailable as exc:
            fig.error = str(exc)
            # The ceiling alone still tells what the stack can do here.
            for _ in range(s.runs):
                bare_rps.append(float(turn(bare)["rps"]))
    fig.runs.update(bare_rps=bare_rps, rulebus_rps=rulebus_rps)
    fig.baseline = median(bare_rps)
    fig.value = median(rulebus_rps)
    fig.ratio = ratio(fig.value, fig.baseline)
    fig.met = None if fig.ratio is None else fig.ratio >= TARGET
    return fig
