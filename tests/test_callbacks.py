"""Callback URLs are checked against SSRF, pinned to one address and sent without raising."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypedDict

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from pygeoapi_prefect.callbacks import (
    CallbackTarget,
    CallbackURLError,
    check_callback_url,
    display_url,
    send_callback,
)

LOOPBACK = ["127.0.0.1/32"]


class Fast(TypedDict):
    timeout: float
    backoff: float


FAST: Fast = {"timeout": 2.0, "backoff": 0.01}
REAL_GETADDRINFO = socket.getaddrinfo

# The IANA special-purpose registries (IPv4 and IPv6), multicast and the reserved space,
# written out here rather than taken from ipaddress, whose answers vary with the patch
# level (before CPython's fix for CVE-2024-4032, 192.0.0.8 and 192.88.99.1 were global).
REFUSED_V4_NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
]
REFUSED_V6_NETWORKS = [
    "::/128",
    "::1/128",
    "::/96",  # IPv4-compatible (deprecated), in the reserved ::/8
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001::/32",  # Teredo
    "2001:2::/48",  # benchmarking
    "2001:20::/28",  # ORCHIDv2
    "2001:db8::/32",
    "3fff::/20",
    "5f00::/16",  # SRv6 SIDs, outside 2000::/3
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "4000::/3",  # unassigned, outside 2000::/3
]
REFUSED_V4 = [ipaddress.IPv4Network(network) for network in REFUSED_V4_NETWORKS]
PROPERTY = settings(max_examples=100, deadline=None, database=None)


@dataclass
class Recorder:
    """A local HTTP server that records requests and answers a scripted list of statuses."""

    server: ThreadingHTTPServer
    statuses: list[int] = field(default_factory=list)
    location: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_recorder(tls: ssl.SSLContext | None = None) -> Recorder:
    recorder: Recorder

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            recorder.requests.append(
                {
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                    "body": self.rfile.read(length),
                }
            )
            status = recorder.statuses.pop(0) if recorder.statuses else 200
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", recorder.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    recorder = Recorder(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return recorder


@pytest.fixture
def recorders() -> Iterator[Callable[..., Recorder]]:
    started: list[Recorder] = []

    def start(tls: ssl.SSLContext | None = None) -> Recorder:
        started.append(start_recorder(tls))
        return started[-1]

    yield start
    for recorder in started:
        recorder.server.shutdown()
        recorder.server.server_close()


@pytest.fixture
def recorder(recorders: Callable[..., Recorder]) -> Recorder:
    return recorders()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fake_resolver(
    table: dict[str, list[str]], calls: list[str]
) -> Callable[..., list[tuple[Any, ...]]]:
    """A getaddrinfo answering for the names in ``table``, the real one for anything else."""

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        calls.append(host)
        answers: list[tuple[Any, ...]] = []
        for text in table[host]:
            if ipaddress.ip_address(text).version == 4:
                answers.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, port)))
            else:
                answers.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (text, port, 0, 0)))
        return answers

    return getaddrinfo


def certificate(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
def tls_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorders: Callable[..., Recorder]
) -> tuple[Recorder, list[str | None]]:
    """An HTTPS recorder with a certificate for ``cb.test`` from a CA the client trusts."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callback test CA")])
    ca = certificate("callback test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate("cb.test", key, ca_name, ca_key, ca=False)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # httpx verifies against certifi's bundle; point it at the test CA instead.
    monkeypatch.setattr(certifi, "where", lambda: str(tmp_path / "ca.pem"))
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    return recorders(context), server_names


# --- check_callback_url -------------------------------------------------------------------


def test_public_literal_is_accepted_and_parsed() -> None:
    target = check_callback_url("https://8.8.8.8/hook/done?token=a%20b#frag")
    assert target == CallbackTarget(
        url="https://8.8.8.8/hook/done?token=a%20b#frag",
        scheme="https",
        host="8.8.8.8",
        port=443,
        path="/hook/done?token=a%20b",
        address=ipaddress.IPv4Address("8.8.8.8"),
    )
    assert check_callback_url("HTTP://8.8.8.8:8080").path == "/"
    assert check_callback_url("http://8.8.8.8:8080").port == 8080


def test_loopback_refused_by_default_and_allowed_by_network() -> None:
    with pytest.raises(CallbackURLError, match="loopback"):
        check_callback_url("http://127.0.0.1:9/x")
    target = check_callback_url("http://127.0.0.1:9/x", allow=LOOPBACK)
    assert target.address == ipaddress.IPv4Address("127.0.0.1")
    with pytest.raises(CallbackURLError, match="loopback"):
        check_callback_url("http://127.0.0.2:9/x", allow=LOOPBACK)


def test_localhost_refused_unless_the_hostname_is_allowed() -> None:
    with pytest.raises(CallbackURLError, match="loopback"):
        check_callback_url("http://localhost/")
    assert check_callback_url("http://LOCALHOST/", allow=["localhost."]).address.is_loopback


@pytest.mark.parametrize(
    "host",
    [
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.254",
        "169.254.169.254",
        "224.0.0.1",
        "239.255.255.250",
        "0.0.0.0",
        "255.255.255.255",
        "240.0.0.1",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
    ],
)
def test_non_public_ipv4_refused(host: str) -> None:
    with pytest.raises(CallbackURLError, match="resolves to"):
        check_callback_url(f"http://{host}/callback")


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "ff02::1",
        "2002:a00:1::1",  # 6to4 around 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
    ],
)
def test_hostname_resolving_to_non_public_ipv6_refused(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"cb.test": [address]}, []))
    with pytest.raises(CallbackURLError, match="resolves to"):
        check_callback_url("http://cb.test/")


def test_ipv4_mapped_answer_is_pinned_as_ipv4(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"cb.test": ["::ffff:8.8.4.4"]}, []))
    assert check_callback_url("http://cb.test/").address == ipaddress.IPv4Address("8.8.4.4")


def test_public_ipv6_answer_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        fake_resolver({"cb.test": ["2606:4700::1111", "64:ff9b::808:808"]}, []),
    )
    assert check_callback_url("http://cb.test/").address == ipaddress.IPv6Address("2606:4700::1111")


def test_any_refused_answer_refuses_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        socket, "getaddrinfo", fake_resolver({"cb.test": ["93.184.216.34", "10.0.0.1"]}, [])
    )
    with pytest.raises(CallbackURLError, match=r"10\.0\.0\.1"):
        check_callback_url("http://cb.test/")
    assert check_callback_url("http://cb.test/", allow=["10.0.0.0/8"]).address == (
        ipaddress.IPv4Address("93.184.216.34")
    )


def test_pinned_to_first_answer_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        socket, "getaddrinfo", fake_resolver({"cb.test": ["93.184.216.34", "8.8.8.8"]}, calls)
    )
    target = check_callback_url("https://cb.test:8443/a?b=c")
    assert calls == ["cb.test"]
    assert target.address == ipaddress.IPv4Address("93.184.216.34")
    assert (target.host, target.port, target.path) == ("cb.test", 8443, "/a?b=c")


def test_hostname_allow_entry_allows_whatever_it_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"internal.test": ["10.9.8.7"]}, []))
    with pytest.raises(CallbackURLError):
        check_callback_url("http://internal.test/")
    target = check_callback_url("http://internal.test/", allow=["Internal.Test"])
    assert target.address == ipaddress.IPv4Address("10.9.8.7")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::1]/x", "IPv6"),
        ("http://[2606:4700::1111]:80/x", "IPv6"),
        ("ftp://8.8.8.8/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://8.8.8.8/", "scheme"),
        ("//8.8.8.8/x", "scheme"),
        ("8.8.8.8/x", "scheme"),
        ("http://user@8.8.8.8/x", "user information"),
        ("http://user:secret@8.8.8.8/x", "user information"),
        ("http://8.8.8.8@127.0.0.1/x", "user information"),
        ("http:///x", "no host"),
        ("http://:80/x", "no host"),
        ("http://8.8.8.8:0/", "port"),
        ("http://8.8.8.8:65536/", "port"),
        ("http://8.8.8.8:-1/", "port"),
        ("http://8.8.8.8:8o/", "port"),
        ("http://8.8.8.8:\N{DIGIT ONE}\N{ARABIC-INDIC DIGIT ZERO}/", "port"),
        ("http://8.8.8.8:80:80/", "':'"),
        ("http://8.8.8.8/a b", "whitespace"),
        (" http://8.8.8.8/", "whitespace"),
        ("http://8.8.8.8/\t", "whitespace"),
        ("http://8.8.8.8/x\r\nHost: evil", "whitespace"),
        ("http://127.0.0.1\n/", "whitespace"),
        ("http://8.8.8.8/\x00", "control"),
        ("http://8.8.8.8/\u00a0", "whitespace"),
        ("http://8.8.8.8\\@127.0.0.1/", "backslash"),
        ("http://exa%6dple.com/", "hostname"),
        ("http://-bad-.example/", "hostname"),
        ("http://8.8.8.8/" + "a" * 2040, "2048"),
        ("http://no-such-host.invalid/", "cannot be resolved"),
    ],
)
def test_malformed_or_refused_urls(url: str, reason: str) -> None:
    with pytest.raises(CallbackURLError, match=reason):
        check_callback_url(url, allow=LOOPBACK)


def test_longest_allowed_url_is_accepted() -> None:
    url = "http://8.8.8.8/" + "a" * (2048 - len("http://8.8.8.8/"))
    assert len(url) == 2048
    assert check_callback_url(url).path.startswith("/aaa")


def test_bad_allow_entry_is_an_error() -> None:
    with pytest.raises(ValueError, match="allow entry"):
        check_callback_url("http://8.8.8.8/", allow=["10.0.0.0/33"])


def test_error_is_a_value_error() -> None:
    assert issubclass(CallbackURLError, ValueError)


def _samples(network: str) -> list[str]:
    """The first, a middle and the last address of ``network``."""
    net = ipaddress.ip_network(network)
    return sorted({str(net[0]), str(net[net.num_addresses // 2]), str(net[-1])})


@pytest.mark.parametrize(
    "address", [address for network in REFUSED_V4_NETWORKS for address in _samples(network)]
)
def test_every_special_purpose_ipv4_range_refused(address: str) -> None:
    with pytest.raises(CallbackURLError, match="resolves to") as refused:
        check_callback_url(f"http://{address}/callback")
    assert " a a " not in str(refused.value) and " an a" not in str(refused.value)


@pytest.mark.parametrize("address", ["192.0.0.8", "192.0.0.9", "192.0.0.170", "192.88.99.1"])
def test_ranges_ipaddress_called_global_before_cve_2024_4032_are_refused(address: str) -> None:
    with pytest.raises(CallbackURLError, match="resolves to"):
        check_callback_url(f"http://{address}/callback")


@pytest.mark.parametrize(
    "address",
    [address for network in REFUSED_V6_NETWORKS for address in _samples(network)]
    + [
        "::ffff:192.0.0.8",  # IPv4-mapped: judged as the IPv4 address
        "64:ff9b::c058:6301",  # NAT64 around 192.88.99.1
        "64:ff9b::7f00:1",  # NAT64 around 127.0.0.1
        "2002:c000:8::1",  # 6to4 around 192.0.0.8
        "2002:c0a8:101::1",  # 6to4 around 192.168.1.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, whatever it embeds
    ],
)
def test_every_special_purpose_ipv6_range_refused(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"cb.test": [address]}, []))
    with pytest.raises(CallbackURLError, match="resolves to") as refused:
        check_callback_url("http://cb.test/")
    assert " a a " not in str(refused.value) and " an a" not in str(refused.value)


@pytest.mark.parametrize(
    "address", ["2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.4.4"]
)
def test_public_ipv6_and_wrappers_of_public_ipv4_accepted(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"cb.test": [address]}, []))
    assert check_callback_url("http://cb.test/").host == "cb.test"


def test_refusal_message_names_the_embedded_ipv4(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"cb.test": ["2002:7f00:1::1"]}, []))
    with pytest.raises(CallbackURLError) as refused:
        check_callback_url("http://cb.test/")
    assert str(refused.value) == (
        "callback host 'cb.test' resolves to 2002:7f00:1::1, an IPv6 address around "
        "127.0.0.1, a loopback address"
    )


def test_a_resolver_that_hangs_is_refused_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hanging(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host != "hang.test":
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        release.wait()
        raise socket.gaierror("released")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    outcome: list[BaseException | CallbackTarget] = []

    def check() -> None:
        try:
            outcome.append(check_callback_url("http://hang.test/", resolve_timeout=0.2))
        except BaseException as error:
            outcome.append(error)

    checker = threading.Thread(target=check, daemon=True)
    checker.start()
    checker.join(30)
    release.set()
    assert outcome, "check_callback_url waited for a resolver that hangs"
    assert isinstance(outcome[0], CallbackURLError), outcome
    assert "did not resolve within 0.2 s" in str(outcome[0])


def test_display_url_drops_query_fragment_and_user_information() -> None:
    assert display_url("https://user:pw@hooks.example:8443/done?token=s3cret#frag") == (
        "https://hooks.example:8443/done"
    )
    assert display_url("http://127.0.0.1:9/hook?token=s3cret") == "http://127.0.0.1:9/hook"
    assert display_url("http://[::1") == "<malformed URL>"


# --- send_callback ------------------------------------------------------------------------


def test_send_delivers_json(recorder: Recorder) -> None:
    target = check_callback_url(f"{recorder.url}/hook?job=1", allow=LOOPBACK)
    payload = {"status": "successful", "jobID": "abc", "progress": 100}
    assert send_callback(target, payload, **FAST) is True
    [request] = recorder.requests
    assert request["path"] == "/hook?job=1"
    assert json.loads(request["body"]) == payload
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Host"] == f"127.0.0.1:{recorder.port}"


def test_send_retries_5xx_then_succeeds(recorder: Recorder) -> None:
    recorder.statuses = [500, 503, 200]
    target = check_callback_url(f"{recorder.url}/hook", allow=LOOPBACK)
    assert send_callback(target, {"n": 1}, retries=3, **FAST) is True
    assert len(recorder.requests) == 3


def test_send_gives_up_after_retries(recorder: Recorder) -> None:
    recorder.statuses = [500] * 10
    target = check_callback_url(f"{recorder.url}/hook", allow=LOOPBACK)
    assert send_callback(target, {"n": 1}, retries=2, **FAST) is False
    assert len(recorder.requests) == 3


def test_send_does_not_retry_4xx(recorder: Recorder) -> None:
    recorder.statuses = [404, 200]
    target = check_callback_url(f"{recorder.url}/hook", allow=LOOPBACK)
    assert send_callback(target, {"n": 1}, **FAST) is False
    assert len(recorder.requests) == 1


def test_send_does_not_follow_redirects(
    recorders: Callable[..., Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = recorders(), recorders()
    first.statuses = [302]
    first.location = f"{second.url}/stolen"
    target = check_callback_url(f"{first.url}/hook", allow=LOOPBACK)
    assert send_callback(target, {"n": 1}, **FAST) is False
    assert len(first.requests) == 1
    assert second.requests == []
    assert "not followed" in caplog.text


def test_send_to_closed_port_returns_false(caplog: pytest.LogCaptureFixture) -> None:
    target = check_callback_url(f"http://127.0.0.1:{closed_port()}/hook", allow=LOOPBACK)
    assert send_callback(target, {"n": 1}, retries=2, **FAST) is False
    assert "after 3 attempts" in caplog.text


def test_send_unserialisable_payload_returns_false(recorder: Recorder) -> None:
    target = check_callback_url(f"{recorder.url}/hook", allow=LOOPBACK)
    assert send_callback(target, {"bad": object()}, **FAST) is False
    assert send_callback(target, {"nan": float("nan")}, **FAST) is False
    assert recorder.requests == []


def test_send_https_to_plain_server_returns_false(recorder: Recorder) -> None:
    target = check_callback_url(f"https://127.0.0.1:{recorder.port}/hook", allow=LOOPBACK)
    assert send_callback(target, {"n": 1}, retries=1, **FAST) is False


def test_send_ignores_proxy_environment(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    target = check_callback_url(f"{recorder.url}/hook", allow=LOOPBACK)
    assert send_callback(target, {"n": 1}, **FAST) is True


def test_https_uses_original_hostname_for_sni_and_verification(
    tls_server: tuple[Recorder, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, server_names = tls_server
    calls: list[str] = []
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        fake_resolver({"cb.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}, calls),
    )
    target = check_callback_url(f"https://cb.test:{server.port}/hook", allow=LOOPBACK)
    assert send_callback(target, {"status": "successful"}, **FAST) is True
    assert server_names == ["cb.test"]
    [request] = server.requests
    assert request["headers"]["Host"] == f"cb.test:{server.port}"

    # The certificate does not name other.test: verification fails, nothing is sent.
    target = check_callback_url(f"https://other.test:{server.port}/hook", allow=LOOPBACK)
    assert send_callback(target, {"status": "successful"}, retries=0, **FAST) is False
    assert server_names[-1] == "other.test"
    assert len(server.requests) == 1
    assert calls == ["cb.test", "other.test"]


def test_dns_rebinding_send_goes_to_pinned_address(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"rebind.test": ["127.0.0.1"]}, calls))
    target = check_callback_url(f"http://rebind.test:{recorder.port}/hook", allow=LOOPBACK)
    assert target.address == ipaddress.IPv4Address("127.0.0.1")
    assert calls == ["rebind.test"]

    # The name now points somewhere internal; the send must not look it up again.
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"rebind.test": ["10.0.0.1"]}, calls))
    assert send_callback(target, {"status": "running"}, **FAST) is True
    assert calls == ["rebind.test"]
    [request] = recorder.requests
    assert request["headers"]["Host"] == f"rebind.test:{recorder.port}"
    assert json.loads(request["body"]) == {"status": "running"}


@dataclass
class RawServer:
    """A loopback TCP server answering each connection with a scripted byte stream."""

    answer: Callable[[socket.socket, threading.Event], None]
    stop: threading.Event = field(default_factory=threading.Event)
    connections: int = 0
    listener: socket.socket = field(default_factory=socket.socket)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def start(self) -> RawServer:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                received += chunk
            with contextlib.suppress(OSError):
                self.answer(conn, self.stop)


@pytest.fixture
def raw_servers() -> Iterator[Callable[..., RawServer]]:
    started: list[RawServer] = []

    def start(answer: Callable[[socket.socket, threading.Event], None]) -> RawServer:
        started.append(RawServer(answer).start())
        return started[-1]

    yield start
    for server in started:
        server.stop.set()
        server.listener.close()


def trickle(first: bytes, each: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """Send ``first``, then ``each`` every 0.1 s until the test ends."""

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(first)
        while not stop.wait(0.1):
            conn.sendall(each)

    return answer


def send_in_thread(target: CallbackTarget, **options: Any) -> list[bool]:
    """Run send_callback in a thread; its answer, or [] if it is still running after 60 s."""
    answer: list[bool] = []
    sender = threading.Thread(
        target=lambda: answer.append(send_callback(target, {"n": 1}, **options)), daemon=True
    )
    sender.start()
    sender.join(60)
    return answer


def test_send_gives_up_on_a_status_line_trickled_byte_by_byte(
    raw_servers: Callable[..., RawServer],
) -> None:
    # Each byte arrives well within the attempt's timeout: only a deadline per attempt ends it.
    server = raw_servers(trickle(b"HTTP/1.1 200 ", b"x"))
    target = check_callback_url(f"{server.url}/hook", allow=LOOPBACK)
    assert send_in_thread(target, timeout=1.0, retries=1, backoff=0.01) == [False]
    assert server.connections == 2


def test_send_gives_up_on_informational_answers_trickled_for_ever(
    raw_servers: Callable[..., RawServer],
) -> None:
    server = raw_servers(trickle(b"HTTP/1.1 102 Processing\r\n", b"X-Wait: 1\r\n"))
    target = check_callback_url(f"{server.url}/hook", allow=LOOPBACK)
    assert send_in_thread(target, timeout=1.0, retries=0) == [False]


def test_send_reads_the_status_line_only(raw_servers: Callable[..., RawServer]) -> None:
    # The status line says delivered; headers that never end do not matter.
    server = raw_servers(trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: 1\r\n"))
    target = check_callback_url(f"{server.url}/hook", allow=LOOPBACK)
    assert send_in_thread(target, **FAST) == [True]


def test_send_skips_informational_answers(raw_servers: Callable[..., RawServer]) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
    server = raw_servers(trickle(answer + b"HTTP/1.1 204 No Content\r\n\r\n", b""))
    target = check_callback_url(f"{server.url}/hook", allow=LOOPBACK)
    assert send_in_thread(target, **FAST) == [True]


def test_send_retries_a_malformed_answer(raw_servers: Callable[..., RawServer]) -> None:
    server = raw_servers(trickle(b"SSH-2.0-OpenSSH_9.6\r\n", b""))
    target = check_callback_url(f"{server.url}/hook", allow=LOOPBACK)
    assert send_in_thread(target, retries=1, **FAST) == [False]
    assert server.connections == 2


def test_send_does_not_read_a_huge_body(raw_servers: Callable[..., RawServer]) -> None:
    size = 128 * 1024 * 1024
    sent: list[int] = []
    finished = threading.Event()

    def huge(conn: socket.socket, stop: threading.Event) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        chunk = b"x" * (1024 * 1024)
        total = 0
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            while total < size:
                conn.sendall(chunk)
                total += len(chunk)
        finally:
            sent.append(total)
            finished.set()

    server = raw_servers(huge)
    target = check_callback_url(f"{server.url}/hook", allow=LOOPBACK)
    assert send_in_thread(target, **FAST) == [True]
    assert finished.wait(60)
    # The sender closed the connection after the status line: the server could write no
    # more than the sockets' buffers hold, nowhere near the whole body.
    assert sent[0] < size // 4, sent


# --- properties ---------------------------------------------------------------------------


@PROPERTY
@given(
    st.sampled_from(REFUSED_V4_NETWORKS).flatmap(lambda network: st.ip_addresses(network=network))
)
def test_refused_ranges_always_refused(address: ipaddress.IPv4Address) -> None:
    with pytest.raises(CallbackURLError):
        check_callback_url(f"http://{address}/")


@PROPERTY
@given(st.ip_addresses(v=4))
def test_ipv4_refused_iff_special_purpose(address: ipaddress.IPv4Address) -> None:
    refused = any(address in network for network in REFUSED_V4)
    try:
        target = check_callback_url(f"http://{address}:8080/cb")
    except CallbackURLError:
        assert refused
    else:
        assert not refused
        assert target.address == address
        # Whatever the Python version, nothing accepted is one that ipaddress calls
        # non-global (the list only refuses more, e.g. multicast).
        assert address.is_global


@PROPERTY
@given(st.ip_addresses(v=6), st.sampled_from(["", ":80", ":443"]))
def test_ipv6_literals_always_refused(address: ipaddress.IPv6Address, port: str) -> None:
    with pytest.raises(CallbackURLError, match="IPv6"):
        check_callback_url(f"http://[{address}]{port}/", allow=["::/0", "0.0.0.0/0"])
