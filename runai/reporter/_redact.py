"""Printing a receiver's URL without what must stay secret: a user, a password, a query (tokens travel there)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url", "shown_url"]


def redact_url(url: str) -> str:
    """*url* fit to print: no user or password, no query (tokens travel there) and no fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def shown_url(url: str) -> str:
    """*url* as a message may show it: itself, unless it holds credentials or a query (then redacted, and said so)."""
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
    except ValueError:
        return "(a URL that cannot be parsed)"
    if parts.username is None and parts.password is None and not parts.query:
        return url
    return redact_url(url) + " (its credentials and query left out)"
