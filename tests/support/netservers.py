"""Small real servers on 127.0.0.x for the managed-network tests: plain HTTP, HTTPS (a throwaway
CA made with ``cryptography``, which paramiko already brings), a raw TCP echo for CONNECT and
SOCKS tunnels, and a UDP sink that counts what reaches it. Each serves on its own thread and
stops when its ``with`` block ends."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import socket
import socketserver
import ssl
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Optional


class _Server:
    server: socketserver.BaseServer

    def __enter__(self) -> _Server:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])  # type: ignore[index]


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every GET with what it received, as JSON: Host, path and headers."""

    def do_GET(self) -> None:
        body = json.dumps({"host": self.headers.get("Host"), "path": self.path,
                           "headers": dict(self.headers.items()), "server": "plain"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingHttp(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HttpServer(_Server):
    def __init__(self, host: str) -> None:
        self.server = _ThreadingHttp((host, 0), _Echo)


class HttpsServer(_Server):
    def __init__(self, host: str, cert: Path, key: Path) -> None:
        self.server = _ThreadingHttp((host, 0), _Echo)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)


class _EchoLines(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"echo-server\n")
        while True:
            data = self.request.recv(4096)
            if not data:
                return
            self.request.sendall(data.upper())


class _ThreadingTcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class EchoServer(_Server):
    """Sends ``echo-server\\n``, then echoes what it gets, upper-cased (proof the bytes crossed)."""

    def __init__(self, host: str) -> None:
        self.server = _ThreadingTcp((host, 0), _EchoLines)


class UdpSink:
    """Counts datagrams that arrive (none should, from a sandbox)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]

    def received(self) -> int:
        count = 0
        while True:
            try:
                self.sock.recv(65536)
            except OSError:
                return count
            count += 1

    def close(self) -> None:
        self.sock.close()


def make_tls(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A CA certificate and a server certificate (with key) for ``names``: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sandfleet test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    alt = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths
