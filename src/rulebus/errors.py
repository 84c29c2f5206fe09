"""The one exception hierarchy of rulebus.

Errors carry their data in attributes; the edges (HTTP, CLI) turn them into
status codes, exit codes and messages.
"""

from __future__ import annotations


class RulebusError(Exception):
    """Base class of every error rulebus raises on purpose."""


class SqlError(RulebusError):
    """A rule or substitution template that does not compile.

    ``line`` and ``column`` are 1-based positions in ``text`` when known, so
    that the template loader can translate them into a file position.
    """

    def __init__(
        self,
        message: str,
        *,
        text: str = "",
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.text = text
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"{self.message} (line {self.line}, column {self.column})"

    def excerpt(self) -> str:
        """The offending source line with a caret under the error column."""
        if self.line is None or not self.text:
            return ""
        lines = self.text.splitlines() or [""]
        source = lines[min(self.line, len(lines)) - 1]
        return f"{source}\n{' ' * max((self.column or 1) - 1, 0)}^"


class SqlEvalError(RulebusError):
    """A rule that compiled but failed while evaluating an event."""


class TemplateError(RulebusError):
    """An app file (rulebus.yaml) that is not valid: carries file, line and key."""

    def __init__(self, message: str, *, file: str, line: int | None, key: str) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.key = key

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        # An empty key: the error is about the whole file (missing, unreadable).
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class BadInput(RulebusError):
    """Input from a client that cannot be accepted (HTTP 4xx)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Unauthorized(BadInput):
    """A request without a valid API key (401), or whose key may not do this (403)."""


class RateLimited(BadInput):
    """A key over its rate limit (429); ``retry_after`` is in whole seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class ActionError(RulebusError):
    """An action that failed; ``retryable`` says whether trying again may help."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        # Seconds the target asked to wait before the next attempt (Retry-After).
        self.retry_after = retry_after


class NotFound(RulebusError):
    """A table, bucket, key or dead letter that does not exist."""


class NoDeadLetter(NotFound):
    """Dead letter ids that name none: ``ids`` are all of those asked for that do not exist."""

    def __init__(self, ids: list[int]) -> None:
        listed = ", ".join(map(str, ids))
        super().__init__(
            f"no dead letter with id {listed}"
            if len(ids) == 1
            else f"no dead letters with ids {listed}"
        )
        self.ids = ids


class Unavailable(RulebusError):
    """A backend that cannot be reached or refuses to work: which one, where, and why.

    ``url`` never carries a password; backends redact it before raising.
    """

    def __init__(self, what: str, url: str, reason: str) -> None:
        super().__init__(f"cannot use {what} at {url}: {reason}")
        self.what = what
        self.url = url
        self.reason = reason


class DiskFull(Unavailable):
    """A store that cannot write because the disk under ``directory`` is full.

    Nothing of the write was kept; the same write works again once there is room.
    """

    def __init__(self, what: str, directory: str) -> None:
        super().__init__(what, directory, f"the disk under {directory} is full")
        self.directory = directory

    def __str__(self) -> str:
        return f"cannot store {self.what}: {self.reason}"
