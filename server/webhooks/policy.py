"""Which callback URLs an upload may name, checked before any byte is stored.

The server POSTs to these URLs from inside its network, so an open list would let any
client make it call internal services (SSRF). Only hosts the operator lists are
allowed (``VIDSCAN_CALLBACK_HOSTS``), over https unless plain http is allowed too
(``VIDSCAN_CALLBACK_ALLOW_HTTP``, for tests and local setups). The delivery worker
checks again before each attempt, so a host removed from the list is no longer called.

A pattern is ``host[:port]``: ``hooks.example.com`` (that host), ``*.example.com``
(its subdomains, not the apex), ``[::1]`` for IPv6; without a port only the scheme's
default port is allowed, ``:8443`` names one, ``:*`` allows any.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from server.errors import FieldViolation, InvalidUpload, Reason

MAX_CALLBACK_URL_CHARS = 2048
FIELD = "header.callback_url"
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class HostPattern:
    host: str  # lower-case; a leading "*." matches subdomains
    port: int | None  # None: the scheme's default port
    any_port: bool = False

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        text = text.strip().lower()
        if text.startswith("["):  # [v6]:port
            host, _, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
            if rest and not rest.startswith(":"):
                raise ValueError(f"callback host pattern {text!r} is malformed")
        else:
            host, _, port_text = text.partition(":")
        if not host or "/" in host or "@" in host:
            raise ValueError(f"callback host pattern {text!r} is not host[:port]")
        if port_text == "*":
            return cls(host=host, port=None, any_port=True)
        if not port_text:
            return cls(host=host, port=None)
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"callback host pattern {text!r} has a bad port")
        return cls(host=host, port=int(port_text))

    def matches(self, host: str, port: int, *, default_port: int) -> bool:
        if self.host.startswith("*."):
            host_ok = host.endswith(self.host[1:]) and host != self.host[2:]
        else:
            host_ok = host == self.host
        if not host_ok:
            return False
        if self.any_port:
            return True
        return port == (default_port if self.port is None else self.port)


def parse_host_patterns(text: str) -> tuple[HostPattern, ...]:
    """``VIDSCAN_CALLBACK_HOSTS``: comma-separated patterns; raises ValueError."""
    return tuple(HostPattern.parse(part) for part in text.split(",") if part.strip())


class CallbackPolicy:
    def __init__(self, *, hosts: tuple[HostPattern, ...], allow_http: bool) -> None:
        self._hosts = hosts
        self._schemes = ("https", "http") if allow_http else ("https",)

    @property
    def enabled(self) -> bool:
        return bool(self._hosts)

    def check(self, url: str) -> str:
        """The URL, unchanged, when an upload may name it ("" stays ""); else
        CALLBACK_URL_NOT_ALLOWED saying why (the URL itself is not echoed: its query
        may hold the receiver's token)."""
        if not url:
            return ""
        problem = self.problem(url)
        if problem is not None:
            raise InvalidUpload(
                Reason.CALLBACK_URL_NOT_ALLOWED,
                f"{FIELD}: {problem}",
                field_violations=[FieldViolation(FIELD, problem)],
            )
        return url

    def allows(self, url: str) -> bool:
        return self.problem(url) is None

    def problem(self, url: str) -> str | None:
        """Why ``url`` is refused, or None."""
        if not self._hosts:
            return "webhooks are off on this server (VIDSCAN_CALLBACK_HOSTS is empty)"
        if len(url) > MAX_CALLBACK_URL_CHARS:
            return f"longer than {MAX_CALLBACK_URL_CHARS} characters"
        if not url.isprintable() or " " in url:
            return "contains spaces or control characters"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return "is not a valid URL"
        if parts.scheme not in self._schemes:
            return f"the scheme must be {' or '.join(self._schemes)}"
        return _host_problem(parts, port, self._hosts)


def _host_problem(
    parts: SplitResult, port: int | None, hosts: tuple[HostPattern, ...]
) -> str | None:
    if parts.username is not None or parts.password is not None:
        return "must not carry user information"
    if parts.fragment:
        return "must not carry a fragment"
    host = parts.hostname
    if not host:
        return "has no host"
    default_port = _DEFAULT_PORTS[parts.scheme]
    effective = default_port if port is None else port
    if not any(p.matches(host, effective, default_port=default_port) for p in hosts):
        return "the host is not allowed for callbacks (VIDSCAN_CALLBACK_HOSTS)"
    return None
