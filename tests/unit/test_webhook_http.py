"""DeadlineTransport over TLS, as deliveries outside devnet go: a pinned address with the name
checked against the certificate (SNI), and the deadline holding through a handshake and an
answer that a receiver drips. Real TLS servers on loopback with a self-signed certificate for
`hooks.example`; the client trusts exactly that certificate."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workers.webhook_http import DeadlineTransport

NAME = "hooks.example"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, pem.decode()


class TlsReceiver:
    """A TLS server on 127.0.0.1 answering each request with `answer(conn)`; records the SNI name
    and the request head of each connection."""

    def __init__(self, cert: tuple[Path, Path, str], answer: Callable[[ssl.SSLSocket, threading.Event], None]) -> None:
        self.answer = answer
        self.server_names: list[str | None] = []
        self.heads: list[bytes] = []
        self.stop = threading.Event()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert[0], cert[1])
        self.context.sni_callback = lambda sslobj, name, ctx: self.server_names.append(name)  # type: ignore[assignment,func-returns-value]
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(raw,), daemon=True).start()

    def _one(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                self.heads.append(head)
                self.answer(conn, self.stop)
                conn.settimeout(5)  # until the client hangs up: closing first could reset the answer away
                while conn.recv(65536):
                    pass
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def tls(certificate: tuple[Path, Path, str]) -> Iterator[Callable[..., TlsReceiver]]:
    started: list[TlsReceiver] = []

    def start(answer: Callable[[ssl.SSLSocket, threading.Event], None]) -> TlsReceiver:
        started.append(TlsReceiver(certificate, answer))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


def ok(conn: ssl.SSLSocket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")


def dripping(conn: ssl.SSLSocket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.wait(0.1):
        conn.sendall(b"a")


def pinned_post(port: int, trust: str, deadline_s: float, sni: str = NAME) -> tuple[float, httpx.Response | Exception]:
    """POST to 127.0.0.1:port as a pinned delivery does: the address in the URL, the name in Host
    and SNI (the certificate is checked against the name)."""
    context = ssl.create_default_context(cadata=trust)
    started = time.monotonic()
    try:
        with httpx.Client(transport=DeadlineTransport(deadline_s, ssl_context=context), timeout=deadline_s,
                          follow_redirects=False, trust_env=False) as client:
            request = client.build_request("POST", f"https://127.0.0.1:{port}/hook", content=b"{}",
                                           headers={"Host": f"{sni}:{port}"}, extensions={"sni_hostname": sni})
            response = client.send(request, stream=True)
            response.close()
            outcome: httpx.Response | Exception = response
    except httpx.HTTPError as exc:
        outcome = exc
    return time.monotonic() - started, outcome


def test_a_pinned_https_post_is_checked_against_the_host_name(tls: Callable[..., TlsReceiver],
                                                             certificate: tuple[Path, Path, str]) -> None:
    receiver = tls(ok)
    _, outcome = pinned_post(receiver.port, certificate[2], deadline_s=5)
    assert isinstance(outcome, httpx.Response) and outcome.status_code == 204
    assert receiver.server_names == [NAME]
    assert f"host: {NAME}:{receiver.port}".encode() in receiver.heads[0].lower()


def test_a_certificate_for_another_name_is_refused(tls: Callable[..., TlsReceiver],
                                                   certificate: tuple[Path, Path, str]) -> None:
    receiver = tls(ok)
    elapsed, outcome = pinned_post(receiver.port, certificate[2], deadline_s=5, sni="other.example")
    assert isinstance(outcome, httpx.ConnectError) and "certificate" in str(outcome).lower() and elapsed < 2
    assert receiver.heads == []


def test_an_answer_dripped_over_tls_is_abandoned_at_the_deadline(tls: Callable[..., TlsReceiver],
                                                                certificate: tuple[Path, Path, str]) -> None:
    receiver = tls(dripping)
    elapsed, outcome = pinned_post(receiver.port, certificate[2], deadline_s=1)
    assert isinstance(outcome, httpx.ReadTimeout) and 1 <= elapsed < 2, elapsed


def test_a_handshake_dripped_byte_by_byte_is_abandoned_at_the_deadline(tls: Callable[..., TlsReceiver],
                                                                      certificate: tuple[Path, Path, str]) -> None:
    """A proxy in front of the TLS server passes the server's bytes on one per 20 ms: a handshake
    of a few kilobytes would take a minute, each byte well within any per-read timeout."""
    receiver = tls(ok)
    proxy = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pump(source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while not stop.is_set():
                data = source.recv(1 if slow else 65536)
                if not data:
                    return
                sink.sendall(data)
                if slow:
                    time.sleep(0.02)
        except OSError:
            return

    def serve() -> None:
        client, _ = proxy.accept()
        upstream = socket.create_connection(("127.0.0.1", receiver.port))
        threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
        pump(upstream, client, True)
        client.close()
        upstream.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        elapsed, outcome = pinned_post(proxy.getsockname()[1], certificate[2], deadline_s=1)
    finally:
        stop.set()
        proxy.close()
    assert isinstance(outcome, httpx.ConnectTimeout) and 1 <= elapsed < 2, (elapsed, outcome)


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        DeadlineTransport(0)
