"""When to try a failed delivery again."""

from __future__ import annotations

import random

from rulebus.template.model import RetrySpec


def backoff(spec: RetrySpec, attempts: int) -> float:
    """Seconds to wait after the given number of failed attempts.

    Exponential with "equal jitter": half the delay is fixed, half random, so
    retries of many failed deliveries spread out instead of arriving together.
    """
    delay: float = min(spec.max_delay, spec.base_delay * 2.0 ** max(attempts - 1, 0))
    return delay / 2 + random.uniform(0, delay / 2)
