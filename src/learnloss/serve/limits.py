"""Every HTTP limit of ``learnloss serve`` in one place: which hosts may be named, who may call, how large a body,
how many tasks a ``/predict`` may name, how many requests are processed at once.

:class:`ServeLimits` holds the settings (the ``learnloss serve`` flags); :class:`RequestGuard` applies them as a pure
ASGI middleware in front of the application, before a route runs and before the body is read, in this order:

1. **Host and Origin** (403). A server on a loopback address that answered any ``Host`` could be driven by a web page
   through DNS rebinding: the page's own name is made to resolve to 127.0.0.1, and the browser then sends the page's
   requests, with ``Host: attacker.example``, to this server. So the ``Host`` header must name this machine's loopback
   (``localhost`` or a loopback address such as ``127.0.0.1`` or ``::1``, with any port) or a name given with
   ``--allowed-host``; a browser's ``Origin``, when sent, must name one of those too (Label Studio's server-to-server
   calls send none). A request without ``Host`` (HTTP/1.0) comes from no browser and passes. With a token set and no
   ``--allowed-host``, any ``Host`` and ``Origin`` are accepted: a page cannot present a token it does not know, and a
   server bound beyond loopback (which needs a token, :func:`learnloss.serve.app.check_binding`) is reached under
   whatever name its network gives it. ``--allowed-host`` makes the check strict again, tokens or not.
2. **The token** (401), when one is set: ``Authorization: Bearer <token>`` (or ``Token <token>``, or HTTP basic auth
   with the token as password). The header's raw bytes are compared, in constant time, with the token's UTF-8 bytes:
   ASGI hands headers over as bytes (what Starlette decodes as latin-1), so a token with non-ASCII characters sent as
   UTF-8 matches.
3. **The body's size** (413): a ``Content-Length`` above the limit is refused without reading a byte; a body without
   one (chunked) is counted as it streams, and refused as soon as it passes the limit. Nothing is ever held beyond
   the limit (plus the one chunk that crossed it).
4. **Requests at once** (503 with ``Retry-After``): at most ``max_requests`` are processed at a time, so that large
   bodies cannot pile up in memory; one more is refused at once, before its body is read.

The number of tasks of a ``/predict`` (413) is checked by the route, once the body is parsed
(:meth:`ServeLimits.check_tasks`). Every refusal is one line of JSON, ``{"error": "<what, and what to do>"}``, and one
warning in the server's log.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from learnloss.errors import UsageError
from learnloss.labeling.backend import BackendError

__all__ = ["RequestGuard", "ServeLimits", "host_name", "is_loopback"]

log = logging.getLogger("learnloss.serve")

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_MIB = 1 << 20
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")  # a DNS name or an IPv4 address (RFC 1123 host names)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, without port or brackets) is this machine's loopback: ``localhost`` or
    a loopback address (127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str | None:
    """The host of a ``Host`` header value, lower-cased, without port or IPv6 brackets (``[::1]:9090`` → ``::1``;
    a bare ``::1`` too); None when the value is not a host (RFC 9110 §7.2: ``host [ ":" port ]``)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return host if _is_ip(host) else None
    if value.count(":") > 1:  # an IPv6 address without brackets and so without a port
        return value if _is_ip(value) else None
    host, colon, port = value.partition(":")
    if colon and not (port.isascii() and port.isdigit()):
        return None
    return host if host.isascii() and _NAME.match(host) else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _mib(value: float) -> str:
    return f"{value:g} MiB"


@dataclass(frozen=True)
class ServeLimits:
    """The HTTP limits of ``learnloss serve`` (see the module docstring for how each applies).

    Attributes:
        allowed_hosts: host names (or addresses) besides this machine's loopback that requests may name in ``Host``
            and ``Origin`` (``--allowed-host``, repeatable). Empty: loopback names only, or any name when a token is
            set.
        max_body_mb: the largest request body, in MiB (``--max-body-mb``). 16 MiB holds a ``/predict`` of
            ``max_tasks`` tasks as Label Studio serialises them (``TaskSimpleSerializer``: data, meta, annotations
            and predictions; 1–2 kB a task of a classification project, some kB with many boxes) with room to
            spare, and any annotation event.
        max_tasks: the most tasks one ``/predict`` may name (``--max-tasks``); each distinct item is decoded and
            scored once however many tasks name it. Label Studio 1.23 sends every task selected for *Retrieve
            Predictions* in one request (``ml/models.py``, ``MLBackend.predict_tasks``), so this is also the most
            tasks to select at once.
        max_requests: the most requests processed at a time (``--max-requests``); beyond it, 503 with
            ``Retry-After``. Label Studio calls one at a time per action (a webhook per saved annotation, one
            ``/predict`` per *Retrieve Predictions*), so a few labelers stay far below it.
        retry_after_s: the ``Retry-After`` of that 503, in seconds.
    """

    allowed_hosts: tuple[str, ...] = ()
    max_body_mb: float = 16.0
    max_tasks: int = 1_000
    max_requests: int = 8
    retry_after_s: int = 2

    def __post_init__(self) -> None:
        hosts = []
        for name in self.allowed_hosts:
            host = name.strip().lower()
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            if not (host.isascii() and (_NAME.match(host) or _is_ip(host))):
                raise UsageError(f"--allowed-host {name!r} is not a host name or address; give the name alone, "
                                 "without scheme, port or path (e.g. --allowed-host labels.example.org)")
            hosts.append(host)
        object.__setattr__(self, "allowed_hosts", tuple(hosts))
        if not self.max_body_mb > 0 or self.max_body_mb * _MIB > 1 << 40:
            raise UsageError(f"--max-body-mb must be a positive number of MiB (at most 1 TiB), got {self.max_body_mb}")
        for flag, value in (("--max-tasks", self.max_tasks), ("--max-requests", self.max_requests),
                            ("retry_after_s", self.retry_after_s)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{flag} must be a whole number of at least 1, got {value!r}")

    @property
    def max_body_bytes(self) -> int:
        """The largest request body, in bytes."""
        return int(self.max_body_mb * _MIB)

    def checks_hosts(self, token: str | None) -> bool:
        """Whether ``Host`` and ``Origin`` are checked: always without a token; with one, only when
        ``allowed_hosts`` names hosts."""
        return not token or bool(self.allowed_hosts)

    def allows_host(self, host: str | None) -> bool:
        """Whether ``host`` (as :func:`host_name` returns it) is this machine's loopback or an allowed host."""
        return host is not None and (is_loopback(host) or host in self.allowed_hosts)

    def check_tasks(self, tasks: object, route: str) -> None:
        """Refuse a request naming more than ``max_tasks`` tasks.

        Raises:
            BackendError: 413, with how many tasks came and what to do.
        """
        if isinstance(tasks, list) and len(tasks) > self.max_tasks:
            message = (f"{route}: {len(tasks):,} tasks in one request, more than the limit of {self.max_tasks:,}; ask "
                       f"for at most {self.max_tasks:,} at a time (select fewer tasks for Retrieve Predictions), or "
                       "start learnloss serve with a larger --max-tasks")
            log.warning("refused POST %s (413): %s", route, message)
            raise BackendError(413, message)

    def hosts_said(self) -> str:
        """The names a request may use, for messages."""
        return ", ".join(("localhost", "127.0.0.1", "::1", *self.allowed_hosts))


class _BodyTooLarge(Exception):
    """Raised into the application by the guarded ``receive`` when a streamed body passes the limit."""


def _presented(header: bytes | None) -> bytes | None:
    """The token an ``Authorization`` header carries (bearer, token or basic with the token as password), as the
    bytes the client sent."""
    if not header:
        return None
    scheme, _, value = header.partition(b" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme in (b"bearer", b"token"):
        return value
    if scheme == b"basic":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]
    return None


def _shown(value: bytes, limit: int = 80) -> str:
    """A header value for a message: printable, quoted, at most ``limit`` characters."""
    text = repr(value.decode("latin-1"))
    return text if len(text) <= limit else text[:limit] + "…'"


class RequestGuard:
    """Pure ASGI middleware applying :class:`ServeLimits` and the token to every HTTP request (module docstring).

    Args:
        app: the application behind the guard.
        limits: the limits.
        token: the token every request must present, or None.
    """

    def __init__(self, app: ASGIApp, limits: ServeLimits, token: str | None = None) -> None:
        self.app = app
        self.limits = limits
        self.token = token.encode("utf-8") if token is not None else None
        self.check_hosts = limits.checks_hosts(token)
        self.active = 0  # requests being processed; the event loop is one thread, so a plain counter is exact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan events
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for key, value in scope.get("headers", ()):
            headers.setdefault(bytes(key).lower(), bytes(value))
        refusal = self._refusal(headers)
        if refusal is not None:
            await self._refuse(scope, send, *refusal)
            return
        if self.active >= self.limits.max_requests:
            await self._refuse(scope, send, 503, f"{self.limits.max_requests} requests are being processed already; "
                               f"retry in {self.limits.retry_after_s} s (or start learnloss serve with a larger "
                               "--max-requests)", [(b"retry-after", str(self.limits.retry_after_s).encode())])
            return
        self.active += 1
        try:
            await self._within_body_limit(scope, receive, send)
        finally:
            self.active -= 1

    def _refusal(self, headers: dict[bytes, bytes]) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """Why a request is refused before its body is read (status, message, extra headers), or None."""
        limits = self.limits
        if self.check_hosts:
            host = headers.get(b"host")
            if host is not None and not limits.allows_host(host_name(host.decode("latin-1"))):
                return 403, (f"Host {_shown(host)} is not a name of this server ({limits.hosts_said()}); call it by "
                             "one of those, or start learnloss serve with --allowed-host NAME"), []
            origin = headers.get(b"origin")
            if origin is not None:
                try:
                    origin_host = urlsplit(origin.decode("latin-1")).hostname
                except ValueError:
                    origin_host = None
                if not limits.allows_host(origin_host):
                    return 403, (f"a web page from {_shown(origin)} may not call this server (allowed: "
                                 f"{limits.hosts_said()}); start learnloss serve with --allowed-host NAME to allow "
                                 "pages of NAME"), []
        if self.token is not None:
            presented = _presented(headers.get(b"authorization"))
            if presented is None or not hmac.compare_digest(presented, self.token):
                return 401, ("missing or wrong token: send Authorization: Bearer <token> (or basic auth with the "
                             "token as password)"), [(b"www-authenticate", b'Bearer realm="learnloss"')]
        declared = headers.get(b"content-length")
        if declared is not None:
            if not (declared.isdigit() and len(declared) < 20):
                return 400, f"Content-Length {_shown(declared)} is not a number of bytes", []
            if int(declared) > limits.max_body_bytes:
                return 413, self._too_large(), []
        return None

    def _too_large(self) -> str:
        return (f"the request body is larger than the limit of {_mib(self.limits.max_body_mb)}; send less in one "
                "request (fewer tasks), or start learnloss serve with a larger --max-body-mb")

    async def _within_body_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the application with a ``receive`` that counts the body's bytes and stops it past the limit.

        Past the limit, the guarded ``receive`` raises into the application, whatever it then answers (FastAPI
        turns a failed body read into a 400; Starlette's error middleware into a 500) is dropped, and the guard
        answers 413 itself.
        """
        limit = self.limits.max_body_bytes
        received = 0
        overflow = False
        started = False

        async def counted() -> Message:
            nonlocal received, overflow
            if overflow:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflow = True
                    raise _BodyTooLarge
            return message

        async def passed(message: Message) -> None:
            nonlocal started
            if overflow:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, passed)
        except Exception:
            if not overflow:
                raise
        if overflow and not started:
            await self._refuse(scope, send, 413, self._too_large(), [])

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str,
                      headers: list[tuple[bytes, bytes]]) -> None:
        """Answer ``status`` with ``{"error": message}`` and close the connection (an unread body follows)."""
        log.warning("refused %s %s (%d): %s", scope.get("method"), scope.get("path"), status, message)
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"), *headers]})
        await send({"type": "http.response.body", "body": body})
