"""The runtime tests' guards: every server a test starts is stopped after it, and a
failed test's report shows what its servers printed."""

from tests.runtime.conftest import (  # noqa: F401  (fixtures and hooks by name)
    no_server_outlives_its_test,
    pytest_runtest_makereport,
)
