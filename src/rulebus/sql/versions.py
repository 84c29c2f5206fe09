"""The SQL versions a rule can choose (AWS IoT's ``awsIotSqlVersion``)."""

from __future__ import annotations

from typing import Final

V2015: Final = "2015-10-08"
V2016: Final = "2016-03-23"

#: Every supported version, oldest first.
SQL_VERSIONS: Final = (V2015, V2016)

#: The version of a rule that names none: the newest, which AWS recommends and
#: which has literals, nested object queries and top-level array output.
DEFAULT_SQL_VERSION: Final = V2016
