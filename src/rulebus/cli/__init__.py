"""The ``rulebus`` command line: a thin layer over the library.

Every error the library raises on purpose becomes one line on stderr and a
non-zero exit code; nothing here prints a traceback for bad input.
"""

from __future__ import annotations

import click

from rulebus.cli.common import Group
from rulebus.cli.data import bucket, dlq, publish, table
from rulebus.cli.graph import graph_command
from rulebus.cli.importer import import_group
from rulebus.cli.keys import keys_group
from rulebus.cli.reload import reload
from rulebus.cli.replay import replay_command
from rulebus.cli.run import api, check, up, worker
from rulebus.cli.sql import sql
from rulebus.cli.testing import test_command
from rulebus.cli.trace import trace_command


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rulebus")
def main() -> None:
    """rulebus: AWS IoT-style topics and SQL rules on your own machines."""


for command in (up, api, worker, check, reload, keys_group, publish, table, bucket, dlq, sql):
    main.add_command(command)
main.add_command(trace_command)
main.add_command(replay_command)
main.add_command(test_command)
main.add_command(graph_command)
main.add_command(import_group)
