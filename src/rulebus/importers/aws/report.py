"""What became of each resource of the templates: IMPORT-REPORT.md, or JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    CONVERTED = "converted"
    CHANGED = "converted with a change"
    NOT_CONVERTED = "not converted"
    NOT_NEEDED = "not needed"


@dataclass
class Entry:
    """One resource (or one rule of get-topic-rule JSON) and what it became."""

    file: str
    line: int | None
    logical_id: str
    type: str
    became: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    reason: str = ""
    needed: bool = True

    @property
    def status(self) -> Status:
        if not self.needed:
            return Status.NOT_NEEDED
        if self.reason:
            return Status.NOT_CONVERTED
        return Status.CHANGED if self.changes else Status.CONVERTED

    def change(self, text: str) -> None:
        if text not in self.changes:
            self.changes.append(text)

    def refuse(self, reason: str) -> None:
        self.reason = reason

    def not_needed(self, reason: str) -> None:
        self.needed = False
        self.reason = reason

    @property
    def where(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"

    def as_json(self) -> dict[str, Any]:
        return {
            "resource": self.logical_id,
            "type": self.type,
            "file": self.file,
            "line": self.line,
            "status": str(self.status),
            "became": self.became,
            "changes": self.changes,
            "reason": self.reason,
        }


@dataclass
class Report:
    files: list[str]
    entries: list[Entry] = field(default_factory=list)
    check: str = ""  # what ``rulebus check`` said of the app made

    def counts(self) -> dict[Status, int]:
        counted = Counter(entry.status for entry in self.entries)
        return {status: counted[status] for status in Status if counted[status]}

    def summary(self) -> str:
        parts = [f"{n} {status}" for status, n in self.counts().items()]
        return f"{len(self.entries)} resources: {', '.join(parts) or 'none'}"

    def as_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "summary": {str(status): n for status, n in self.counts().items()},
            "resources": [entry.as_json() for entry in self.entries],
        }

    def markdown(self) -> str:
        lines = [
            "# Import report",
            "",
            f"Made by `rulebus import aws` from {', '.join(f'`{f}`' for f in self.files)}.",
            "",
            f"{self.summary()}. {self.check}".rstrip(),
            "",
            "| resource | type | where | status | became |",
            "|---|---|---|---|---|",
        ]
        for entry in self.entries:
            became = ", ".join(entry.became) or "-"
            lines.append(
                f"| `{entry.logical_id}` | {entry.type} | {entry.where} | {entry.status} |"
                f" {became} |"
            )
        explained = [e for e in self.entries if e.changes or e.reason]
        if explained:
            lines += ["", "## Changes and reasons"]
        for entry in explained:
            lines += ["", f"### `{entry.logical_id}` ({entry.where}): {entry.status}", ""]
            if entry.reason:
                lines.append(f"- {entry.reason}")
            lines += [f"- {change}" for change in entry.changes]
        return "\n".join(lines) + "\n"
