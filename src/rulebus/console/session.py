"""Console sessions: an API key with the ``admin`` scope, traded for a signed cookie.

The cookie holds a random session id signed with HMAC-SHA256 under a secret
made at first start and kept in ``DATA_DIR/console/secret``. The key itself
stays in this process's memory, behind the session, and is checked again
through the ``Authenticator`` on every request: a revoked key ends its
sessions within about a second. Sessions live in memory, so a restart of the
API process ends them all (one logs in again).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rulebus.api.auth import Authenticator, require
from rulebus.errors import Unauthorized
from rulebus.keys import ApiKey

COOKIE = "rulebus_console"
LIFETIME = 12 * 3600  # seconds a session lasts after login
MAX_SESSIONS = 1000  # the oldest go first: logins cannot fill the memory


@dataclass
class Session:
    key: str  # the API key given at login
    csrf: str  # sent back with every form that changes something
    expires: float
    found: ApiKey  # what the key is (name, scopes, topics) as last checked


class Sessions:
    def __init__(self, data_dir: Path, auth: Authenticator) -> None:
        self._auth = auth
        self._secret = _secret(data_dir)
        self._open: dict[str, Session] = {}

    async def login(self, key: str) -> tuple[str, ApiKey]:
        """A signed cookie value for ``key``; ``Unauthorized`` unless it holds ``admin``."""
        found = await self._auth.authenticate(f"Bearer {key.strip()}")
        require(found, ("admin",), "use the console")
        while len(self._open) >= MAX_SESSIONS:
            del self._open[next(iter(self._open))]
        sid = secrets.token_urlsafe(24)
        self._open[sid] = Session(
            key.strip(), secrets.token_urlsafe(24), time.time() + LIFETIME, found
        )
        return f"{sid}.{self._sign(sid)}", found

    async def check(self, cookie: str | None) -> Session | None:
        """The session the cookie names, while it is valid and its key still has ``admin``."""
        if not cookie:
            return None
        sid, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature, self._sign(sid)):
            return None
        session = self._open.get(sid)
        if session is None or session.expires < time.time():
            self._open.pop(sid, None)
            return None
        try:
            found = await self._auth.authenticate(f"Bearer {session.key}")
            require(found, ("admin",), "use the console")
        except Unauthorized:
            # Revoked, or its scopes changed: this session is over. (Over its
            # rate limit, a key keeps its session: the 429 goes through.)
            del self._open[sid]
            return None
        session.found = found
        return session

    def logout(self, cookie: str | None) -> None:
        if cookie:
            self._open.pop(cookie.partition(".")[0], None)

    def _sign(self, sid: str) -> str:
        return hmac.new(self._secret, sid.encode(), hashlib.sha256).hexdigest()


def _secret(data_dir: Path) -> bytes:
    """The signing secret, made once per data directory (readable by its owner only)."""
    path = data_dir / "console" / "secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a file of its own, then linked in place: a process
    # starting at the same time reads either no secret or the whole of one.
    fd, temp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    try:
        os.link(temp, path)
    except FileExistsError:
        pass  # another process made it first: use theirs
    finally:
        os.unlink(temp)
    return path.read_bytes()
