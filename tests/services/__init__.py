"""Real servers the tests share: each module starts or finds one, once per session.

A server that is missing skips the tests that need it on a developer's
machine; with ``RULEBUS_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets) it fails them.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(what: str, why: str) -> NoReturn:
    message = f"{what} is not available: {why}"
    if os.environ.get("RULEBUS_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
