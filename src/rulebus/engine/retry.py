"""When to try a failed delivery again."""

from __future__ import annotations

import random
from collections.abc import Sequence

from rulebus.backends.base import Failure
from rulebus.template.model import RetrySpec

# The longest wait a target's Retry-After may impose. A longer one is most
# likely a mistake, and the delivery's attempts would run out only after days.
MAX_RETRY_AFTER = 3600.0


def backoff(spec: RetrySpec, attempts: int, failures: Sequence[Failure] = ()) -> float:
    """Seconds to wait after the given number of failed attempts.

    Exponential with "equal jitter": half the delay is fixed, half random, so
    retries of many failed deliveries spread out instead of arriving together.
    A target that asked for more time with ``Retry-After`` (a 429 or 503) gets
    at least that, up to MAX_RETRY_AFTER.
    """
    delay: float = min(spec.max_delay, spec.base_delay * 2.0 ** max(attempts - 1, 0))
    jittered = delay / 2 + random.uniform(0, delay / 2)
    asked = [f.retry_after for f in failures if f.retry_after is not None]
    if asked:
        return max(jittered, min(max(asked), MAX_RETRY_AFTER))
    return jittered
