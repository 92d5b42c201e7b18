"""OGC API - Processes callbacks (``subscriber`` URIs), checked and sent safely.

A client of ``/processes/{id}/execution`` may name URLs the server should notify when a
job progresses, succeeds or fails. Those URLs come from outside, so sending to them is a
server-side request forgery risk: a client could make the server talk to its own
loopback interface, to the cloud metadata service, or to anything on the private network.

`check_callback_url` parses the URL strictly, resolves its host once and refuses it if any
address it resolves to is not a public unicast address (unless an ``allow`` entry lets it
through). The `CallbackTarget` it returns is pinned to one resolved address, and
`send_callback` connects to exactly that address, so that a DNS answer which changes
between the check and the send (DNS rebinding) cannot redirect the callback. TLS still
verifies the certificate against the original hostname.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

__all__ = ["CallbackTarget", "CallbackURLError", "check_callback_url", "send_callback"]

LOGGER = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH: Final = 2048
DEFAULT_PORTS: Final = {"http": 80, "https": 443}

_CGNAT: Final = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_PORT_RE: Final = re.compile(r"[0-9]{1,5}")
_LABEL_RE: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_USER_AGENT: Final = "pygeoapi-prefect-callback"


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


def check_callback_url(url: str, allow: Sequence[str] = ()) -> CallbackTarget:
    """Check a callback URL against server-side request forgery and pin its address.

    The URL must be ``http`` or ``https``, have a host, no user information, a valid port
    and no whitespace or control characters, and be at most 2048 characters long. IPv6
    literal hosts are refused. The host is resolved once, with `socket.getaddrinfo`; the
    URL is refused if any resolved address is loopback, private, link-local, shared
    (CGNAT, 100.64.0.0/10), multicast, reserved, unspecified, broadcast or otherwise not
    global, including IPv4 addresses embedded in IPv4-mapped, 6to4, Teredo and NAT64
    IPv6 addresses.

    Args:
        url: The callback URL, as a client sent it.
        allow: Exceptions to the address rules. Each entry is either an IP network in
            CIDR notation (``"10.0.0.0/8"``, ``"127.0.0.1/32"``; a bare address means
            just that address), which lets through addresses inside it, or a hostname,
            which lets that host through whatever it resolves to.

    Returns:
        The checked target, pinned to the first resolved address.

    Raises:
        CallbackURLError: If the URL is malformed, cannot be resolved or is refused.
        ValueError: If an ``allow`` entry is neither a network nor a hostname.
    """
    networks, hostnames = _parse_allow(allow)
    scheme, host, port, path = _parse_url(url)
    addresses = _resolve(host, port)
    host_allowed = host.rstrip(".") in hostnames
    for address in addresses:
        if host_allowed or any(address in network for network in networks):
            continue
        reason = _refusal_reason(address)
        if reason is not None:
            raise CallbackURLError(
                f"callback host {host!r} resolves to {address}, {reason} address"
            )
    return CallbackTarget(
        url=url, scheme=scheme, host=host, port=port, path=path, address=addresses[0]
    )


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
    hostname (sent as SNI). Redirects are not followed. Connection errors, timeouts and
    5xx answers are retried, up to ``retries`` times after the first attempt, waiting
    ``backoff``, then twice that, and so on between attempts. Proxy settings from the
    environment are ignored, as a proxy would resolve the hostname again.

    Args:
        target: A target from `check_callback_url`.
        payload: The JSON-serializable body.
        timeout: Timeout in seconds for each attempt (connect, read, write, pool).
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

    address = str(target.address)
    if target.address.version == 6:
        address = f"[{address}]"
    request_url = f"{target.scheme}://{address}:{target.port}{target.path}"
    host_header = target.host
    if target.port != DEFAULT_PORTS[target.scheme]:
        host_header = f"{target.host}:{target.port}"
    headers = {
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}

    attempts = max(retries, 0) + 1
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            for attempt in range(1, attempts + 1):
                if attempt > 1:
                    time.sleep(backoff * 2 ** (attempt - 2))
                try:
                    response = client.post(
                        request_url, content=body, headers=headers, extensions=extensions
                    )
                except httpx.TransportError as error:
                    LOGGER.warning(
                        "callback to %s failed (attempt %d of %d): %s",
                        where,
                        attempt,
                        attempts,
                        error or type(error).__name__,
                    )
                    continue
                status = response.status_code
                if 200 <= status < 300:
                    LOGGER.debug("callback to %s delivered (%d)", where, status)
                    return True
                if 300 <= status < 400:
                    LOGGER.warning(
                        "callback to %s answered %d; redirect to %r not followed",
                        where,
                        status,
                        response.headers.get("Location"),
                    )
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


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Resolve ``host`` once; IPv4-mapped IPv6 answers become IPv4 addresses."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise CallbackURLError(f"callback host {host!r} cannot be resolved: {error}") from None
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canonname, sockaddr in infos:
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
    """Why a callback must not connect to ``address``, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = _refusal_reason(embedded)
            if reason is not None:
                return f"an IPv6 address embedding a {reason} IPv4"
            if address in _NAT64:
                # ipaddress calls all of 64:ff9b::/96 reserved; it is as public as the
                # IPv4 address it translates to.
                return None
    checks = (
        (address.is_unspecified, "an unspecified"),
        (address.is_loopback, "a loopback"),
        (address.is_link_local, "a link-local"),
        (address.is_multicast, "a multicast"),
        (address in _CGNAT, "a shared (CGNAT)"),
        (address == ipaddress.IPv4Address("255.255.255.255"), "a broadcast"),
        (address.is_private, "a private"),
        (address.is_reserved, "a reserved"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "a site-local"),
        (not address.is_global, "a non-global"),
    )
    for refused, reason in checks:
        if refused:
            return reason
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4, Teredo or NAT64 IPv6 address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
