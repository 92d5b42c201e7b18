"""OGC API - Processes callbacks (``subscriber`` URIs), checked and sent safely.

A client of ``/processes/{id}/execution`` may name URLs the server should notify when a
job progresses, succeeds or fails. Those URLs come from outside, so sending to them is a
server-side request forgery risk: a client could make the server talk to its own
loopback interface, to the cloud metadata service, or to anything on the private network.

`check_callback_url` parses the URL strictly, resolves its host once (in a helper thread,
waiting at most a few seconds) and refuses it if any address it resolves to falls in one
of the IANA special-purpose ranges listed here (`ipaddress`'s own checks vary with the
Python patch level, so they are not used), unless an ``allow`` entry lets it through. The
`CallbackTarget` it returns is pinned to one resolved address, and `send_callback`
connects to exactly that address, so that a DNS answer which changes between the check
and the send (DNS rebinding) cannot redirect the callback. TLS still verifies the
certificate against the original hostname. Each attempt has a wall-clock deadline, and
only the answer's status line is read: a subscriber that answers slowly, or with a huge
body, costs the job's process a few seconds and a few kilobytes at most.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx

__all__ = [
    "RESOLVE_TIMEOUT",
    "CallbackTarget",
    "CallbackURLError",
    "check_callback_url",
    "display_url",
    "send_callback",
]

LOGGER = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH: Final = 2048
DEFAULT_PORTS: Final = {"http": 80, "https": 443}

RESOLVE_TIMEOUT = 5.0
"""Seconds `check_callback_url` waits for a host name to resolve before refusing it."""

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
# IANA IPv4 Special-Purpose Address Registry, plus multicast and the reserved 240/4: no
# callback goes there, whichever Python's ipaddress module thinks is global.
_REFUSED_V4: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = (
    (_V4("0.0.0.0/8"), "an unspecified ('this network')"),
    (_V4("10.0.0.0/8"), "a private"),
    (_V4("100.64.0.0/10"), "a shared (CGNAT)"),
    (_V4("127.0.0.0/8"), "a loopback"),
    (_V4("169.254.0.0/16"), "a link-local"),
    (_V4("172.16.0.0/12"), "a private"),
    (_V4("192.0.0.0/24"), "an IETF protocol assignment"),
    (_V4("192.0.2.0/24"), "a documentation (TEST-NET-1)"),
    (_V4("192.88.99.0/24"), "a 6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "a private"),
    (_V4("198.18.0.0/15"), "a benchmarking"),
    (_V4("198.51.100.0/24"), "a documentation (TEST-NET-2)"),
    (_V4("203.0.113.0/24"), "a documentation (TEST-NET-3)"),
    (_V4("224.0.0.0/4"), "a multicast"),
    (_V4("255.255.255.255/32"), "a broadcast"),
    (_V4("240.0.0.0/4"), "a reserved"),
)
# IANA IPv6 Special-Purpose Address Registry and the non-unicast parts of the address space;
# IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4 addresses are judged by the IPv4 inside.
_MAPPED: Final = _V6("::ffff:0:0/96")
_NAT64: Final = _V6("64:ff9b::/96")
_SIXTOFOUR: Final = _V6("2002::/16")
_REFUSED_V6: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = (
    (_V6("::/128"), "an unspecified"),
    (_V6("::1/128"), "a loopback"),
    (_V6("64:ff9b:1::/48"), "a local-use IPv4/IPv6 translation"),
    (_V6("100::/64"), "a discard-only"),
    (_V6("2001::/23"), "an IETF protocol assignment (Teredo, benchmarking, ORCHID)"),
    (_V6("2001:db8::/32"), "a documentation"),
    (_V6("3fff::/20"), "a documentation"),
    (_V6("fc00::/7"), "a unique local (private)"),
    (_V6("fe80::/10"), "a link-local"),
    (_V6("fec0::/10"), "a site-local"),
    (_V6("ff00::/8"), "a multicast"),
)
_GLOBAL_UNICAST_V6: Final = _V6("2000::/3")

_PORT_RE: Final = re.compile(r"[0-9]{1,5}")
_LABEL_RE: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_STATUS_RE: Final = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [^\r\n]*)?\r?\n")
_USER_AGENT: Final = "pygeoapi-prefect-callback"
_REQUEST_TARGET_SAFE: Final = "".join(map(chr, range(0x21, 0x7F)))
_MAX_LINE: Final = 8192
_SEND_CHUNK: Final = 64 * 1024
_RESOLVERS: Final = threading.BoundedSemaphore(32)


class _NoAnswerError(Exception):
    """The subscriber did not send a well-formed HTTP status line in time."""


class CallbackURLError(ValueError):
    """A callback URL that is malformed or points somewhere the server must not connect to.

    The message says why the URL was refused.
    """


@dataclass(frozen=True)
class CallbackTarget:
    """A checked callback URL, pinned to the address it will be sent to.

    Attributes:
        url: The URL as the client gave it.
        scheme: ``"http"`` or ``"https"``.
        host: The hostname (lower case, ASCII; IDNA-encoded if it was not), or an IPv4
            literal; used for the ``Host`` header and, with https, for SNI and
            certificate verification.
        port: The TCP port, the scheme's default when the URL has none.
        path: The request target: the path (``/`` when empty) and, if any, ``?query``.
        address: The resolved IP address the callback connects to.
    """

    url: str
    scheme: str
    host: str
    port: int
    path: str
    address: IPAddress


def check_callback_url(
    url: str, allow: Sequence[str] = (), *, resolve_timeout: float | None = None
) -> CallbackTarget:
    """Check a callback URL against server-side request forgery and pin its address.

    The URL must be ``http`` or ``https``, have a host, no user information, a valid port
    and no whitespace or control characters, and be at most 2048 characters long. IPv6
    literal hosts are refused. The host is resolved once, with `socket.getaddrinfo` in a
    helper thread: a resolver that does not answer within ``resolve_timeout`` seconds
    refuses the URL, and the calling thread does not wait any longer. The URL is refused
    if any resolved address lies in an IANA special-purpose range: unspecified, loopback,
    private, shared (CGNAT, 100.64.0.0/10), link-local, IETF protocol assignments,
    documentation, benchmarking, 6to4 relay, multicast, reserved or broadcast in IPv4;
    unspecified, loopback, discard-only, IETF protocol assignments (Teredo included),
    documentation, unique local, link-local, site-local, multicast or anything outside
    2000::/3 in IPv6, and IPv4-mapped, NAT64 and 6to4 addresses whose IPv4 address is
    refused. The ranges are listed here, so the answer does not depend on the Python
    version.

    Args:
        url: The callback URL, as a client sent it.
        allow: Exceptions to the address rules. Each entry is either an IP network in
            CIDR notation (``"10.0.0.0/8"``, ``"127.0.0.1/32"``; a bare address means
            just that address), which lets through addresses inside it, or a hostname,
            which lets that host through whatever it resolves to.
        resolve_timeout: Seconds to wait for the host to resolve; `RESOLVE_TIMEOUT` if
            not given.

    Returns:
        The checked target, pinned to the first resolved address.

    Raises:
        CallbackURLError: If the URL is malformed, cannot be resolved in time or is
            refused.
        ValueError: If an ``allow`` entry is neither a network nor a hostname.
    """
    networks, hostnames = _parse_allow(allow)
    scheme, host, port, path = _parse_url(url)
    timeout = RESOLVE_TIMEOUT if resolve_timeout is None else resolve_timeout
    addresses = _resolve(host, port, timeout)
    host_allowed = host.rstrip(".") in hostnames
    for address in addresses:
        if host_allowed or any(address in network for network in networks):
            continue
        reason = _refusal_reason(address)
        if reason is not None:
            raise CallbackURLError(f"callback host {host!r} resolves to {address}, {reason}")
    return CallbackTarget(
        url=url, scheme=scheme, host=host, port=port, path=path, address=addresses[0]
    )


def display_url(url: str) -> str:
    """A callback URL as it may be logged: without user information, query or fragment.

    Subscribers often put a token in the query string; it must not reach a log.

    Args:
        url: A URL, checked or not.

    Returns:
        ``scheme://host[:port]/path``, or a placeholder if the URL cannot be parsed.

    Examples:
        >>> display_url("https://user:pw@hooks.example:8443/done?token=secret#x")
        'https://hooks.example:8443/done'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def send_callback(
    target: CallbackTarget,
    payload: Any,
    *,
    timeout: float = 5.0,
    retries: int = 3,
    backoff: float = 0.5,
) -> bool:
    """POST a JSON payload to a checked callback target; never raise.

    The request goes to the target's pinned address, with no DNS lookup, and carries the
    original ``Host`` header; with https the certificate is verified against the original
    hostname (sent as SNI), with the CA bundle httpx uses. Redirects are not followed.
    Each attempt must connect, send the request and receive the answer's status line
    within ``timeout`` seconds of wall-clock time, however slowly the subscriber trickles
    its bytes. Only the status line is read: the connection is closed then, so the
    answer's headers and body are never read or held. Connection errors, timeouts,
    malformed answers and 5xx answers are retried, up to ``retries`` times after the
    first attempt, waiting ``backoff``, then twice that, and so on between attempts.
    Proxy settings from the environment are ignored, as a proxy would resolve the
    hostname again.

    Args:
        target: A target from `check_callback_url`.
        payload: The JSON-serializable body.
        timeout: Wall-clock limit, in seconds, of each attempt.
        retries: How many times to retry after a failed first attempt.
        backoff: Seconds to wait before the first retry; doubled for each further one.

    Returns:
        Whether a 2xx answer arrived. A 3xx, a 4xx, a 5xx on the last attempt, a
        connection failure on the last attempt or a payload that is not JSON all give
        False; each is logged.
    """
    where = f"{target.scheme}://{target.host}:{target.port} ({target.address})"
    try:
        body = json.dumps(payload, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as error:
        LOGGER.error("callback to %s not sent: payload is not JSON (%s)", where, error)
        return False

    attempts = max(retries, 0) + 1
    try:
        request = _request(target, body)
        context = httpx.create_ssl_context(trust_env=False) if target.scheme == "https" else None
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                time.sleep(backoff * 2 ** (attempt - 2))
            try:
                status = _post(target, request, context, timeout)
            except (OSError, _NoAnswerError) as error:
                LOGGER.warning(
                    "callback to %s failed (attempt %d of %d): %s",
                    where,
                    attempt,
                    attempts,
                    error or type(error).__name__,
                )
                continue
            if 200 <= status < 300:
                LOGGER.debug("callback to %s delivered (%d)", where, status)
                return True
            if 300 <= status < 400:
                LOGGER.warning("callback to %s answered %d; redirect not followed", where, status)
                return False
            if status >= 500:
                LOGGER.warning(
                    "callback to %s answered %d (attempt %d of %d)",
                    where,
                    status,
                    attempt,
                    attempts,
                )
                continue
            LOGGER.warning("callback to %s refused with %d; not retried", where, status)
            return False
    except Exception:
        LOGGER.exception("callback to %s failed unexpectedly", where)
        return False
    LOGGER.error("callback to %s not delivered after %d attempts", where, attempts)
    return False


def _request(target: CallbackTarget, body: bytes) -> bytes:
    """The bytes of an HTTP/1.1 POST of ``body`` to ``target``, on a connection of its own."""
    host_header = target.host
    if target.port != DEFAULT_PORTS[target.scheme]:
        host_header = f"{target.host}:{target.port}"
    # The target was checked for whitespace and control characters; only non-ASCII
    # characters need percent-encoding to make a request line.
    path = quote(target.path, safe=_REQUEST_TARGET_SAFE)
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"User-Agent: {_USER_AGENT}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


def _post(
    target: CallbackTarget, request: bytes, context: ssl.SSLContext | None, timeout: float
) -> int:
    """One attempt: connect, send ``request``, read the status code; all within ``timeout``.

    Every blocking step gets what is left of the attempt's time as its socket timeout
    (a TLS handshake honours it as a whole), so the attempt ends by its deadline.
    """
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {timeout:g} s")
        return left

    with socket.create_connection((str(target.address), target.port), timeout=remaining()) as raw:
        if context is None:
            return _exchange(raw, request, remaining)
        raw.settimeout(remaining())
        with context.wrap_socket(raw, server_hostname=target.host) as tls:
            return _exchange(tls, request, remaining)


def _exchange(sock: socket.socket, request: bytes, remaining: Callable[[], float]) -> int:
    """Send ``request`` and read the final status code, skipping informational answers."""
    view = memoryview(request)
    while view:
        sock.settimeout(remaining())
        view = view[sock.send(view[:_SEND_CHUNK]) :]
    buffer = b""
    while True:
        line, buffer = _read_line(sock, buffer, remaining)
        match = _STATUS_RE.fullmatch(line)
        if match is None:
            raise _NoAnswerError(f"malformed status line {line[:64]!r}")
        status = int(match.group(1))
        if status >= 200:
            return status
        # A 1xx answer: skip its header lines, then read the next status line.
        while line not in (b"\r\n", b"\n"):
            line, buffer = _read_line(sock, buffer, remaining)


def _read_line(
    sock: socket.socket, buffer: bytes, remaining: Callable[[], float]
) -> tuple[bytes, bytes]:
    """Read one line (with its end) from ``sock``; return it and what was read after it."""
    while b"\n" not in buffer:
        if len(buffer) > _MAX_LINE:
            raise _NoAnswerError(f"answer line longer than {_MAX_LINE} bytes")
        sock.settimeout(remaining())
        chunk = sock.recv(4096)
        if not chunk:
            raise _NoAnswerError("connection closed before an answer")
        buffer += chunk
    line, _, rest = buffer.partition(b"\n")
    if len(line) > _MAX_LINE:
        raise _NoAnswerError(f"answer line longer than {_MAX_LINE} bytes")
    return line + b"\n", rest


def _parse_allow(allow: Sequence[str]) -> tuple[list[IPNetwork], set[str]]:
    """Split ``allow`` entries into IP networks and normalised hostnames."""
    networks: list[IPNetwork] = []
    hostnames: set[str] = set()
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            continue
        except ValueError:
            pass
        name = entry.strip().lower().rstrip(".")
        if not _is_hostname(name):
            raise ValueError(f"callback allow entry {entry!r} is neither a network nor a host")
        hostnames.add(name)
    return networks, hostnames


def _parse_url(url: str) -> tuple[str, str, int, str]:
    """Parse and validate a callback URL into scheme, host, port and request target."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackURLError(f"callback URL is longer than {MAX_URL_LENGTH} characters")
    # Checked before parsing: urlsplit silently drops tabs and newlines, and strips
    # leading control characters and spaces.
    for char in url:
        if ord(char) <= 0x20 or ord(char) == 0x7F or char.isspace() or not char.isprintable():
            raise CallbackURLError(
                f"callback URL contains whitespace or a control character ({char!r})"
            )
    if "\\" in url:
        raise CallbackURLError("callback URL contains a backslash")
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise CallbackURLError(f"callback URL is malformed: {error}") from None

    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise CallbackURLError(
            f"callback URL scheme must be http or https, not {parts.scheme or 'none'!r}"
        )
    netloc = parts.netloc
    if "@" in netloc:
        raise CallbackURLError("callback URL must not contain user information")
    if "[" in netloc or "]" in netloc:
        raise CallbackURLError("callback URL must not use an IPv6 literal host")
    host, colon, port_text = netloc.partition(":")
    if ":" in port_text:
        raise CallbackURLError("callback URL has more than one ':' in its authority")
    if not host:
        raise CallbackURLError("callback URL has no host")
    port = DEFAULT_PORTS[scheme]
    if colon and port_text:
        if not _PORT_RE.fullmatch(port_text) or not 0 < int(port_text) < 65536:
            raise CallbackURLError(f"callback URL has an invalid port {port_text!r}")
        port = int(port_text)

    try:
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise CallbackURLError(f"callback URL host {host!r} is not a valid hostname") from None
    host = host.lower()
    if not _is_hostname(host.rstrip(".")):
        raise CallbackURLError(f"callback URL host {host!r} is not a valid hostname")

    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return scheme, host, port, path


def _is_hostname(name: str) -> bool:
    """Whether ``name`` (lower case, no trailing dot) is a syntactically valid hostname."""
    if not name or len(name) > 253:
        return False
    return all(_LABEL_RE.fullmatch(label) for label in name.split("."))


def _resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    """Resolve ``host`` once, waiting at most ``timeout`` seconds.

    IPv4-mapped IPv6 answers become IPv4 addresses. The lookup runs in a daemon thread,
    so a resolver that hangs holds neither the caller nor the process's exit; at most 32
    lookups are pending at once.
    """
    deadline = time.monotonic() + timeout
    if not _RESOLVERS.acquire(timeout=timeout):
        raise CallbackURLError(f"callback host {host!r} cannot be resolved now: lookups pending")
    answer: list[Any] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as error:
            answer.append(error)
        finally:
            _RESOLVERS.release()
            done.set()

    try:
        threading.Thread(target=lookup, name="callback-resolve", daemon=True).start()
    except RuntimeError:
        _RESOLVERS.release()
        raise
    if not done.wait(max(deadline - time.monotonic(), 0)):
        raise CallbackURLError(f"callback host {host!r} did not resolve within {timeout:g} s")
    if isinstance(answer[0], Exception):
        raise CallbackURLError(f"callback host {host!r} cannot be resolved: {answer[0]}")
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canonname, sockaddr in answer[0]:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0]).partition("%")[0]
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise CallbackURLError(f"callback host {host!r} resolves to no IP address")
    return addresses


def _refusal_reason(address: IPAddress) -> str | None:
    """Why a callback must not connect to ``address`` (``"a loopback address"``), or None."""
    if isinstance(address, ipaddress.IPv4Address):
        for network, kind in _REFUSED_V4:
            if address in network:
                return f"{kind} address"
        return None
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = _refusal_reason(embedded)
        return None if reason is None else f"an IPv6 address around {embedded}, {reason}"
    for network6, kind in _REFUSED_V6:
        if address in network6:
            return f"{kind} address"
    if address not in _GLOBAL_UNICAST_V6:
        return "a reserved address (outside global unicast 2000::/3)"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 IPv6 address."""
    if address in _MAPPED or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIXTOFOUR:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    return None
