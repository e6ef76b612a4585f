"""URIs with credentials in them, as the connection Secrets of server brokers carry."""

from __future__ import annotations

import urllib.parse


def userinfo(username: str | None, password: str | None, default_user: str = "") -> str:
    """`user:password@` (quoted), `user@`, or "" without either."""
    if not username and not password:
        return ""
    info = urllib.parse.quote(username or default_user, safe="")
    if password:
        info += ":" + urllib.parse.quote(password, safe="")
    return info + "@"


def unquoted(value: str | None) -> str | None:
    """A user name or password out of a parsed URI, None when absent."""
    return urllib.parse.unquote(value) if value else None
