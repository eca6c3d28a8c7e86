"""TLS, black-box: certificates made at test time, the real server, real handshakes."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_http_limits import wait_closed

pytestmark = pytest.mark.slow

LOOPS = ["uvloop", "asyncio"]
PASSWORD = "s3cret pass"


# ---------------------------------------------------------------- certificates


def _with_cryptography(out: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "arbiter tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(subject: str, key, issuer_name, issuer_key, *, ca: bool, usage=None,
              san=None) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(name(subject))
                   .issuer_name(issuer_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True))
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), False)
        return builder.sign(issuer_key, hashes.SHA256())

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(key, password: str | None = None) -> bytes:
        encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                      else serialization.NoEncryption())
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8, encryption)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("test CA", ca_key, name("test CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = issue("localhost", server_key, ca.subject, ca_key, ca=False,
                   usage=[ExtendedKeyUsageOID.SERVER_AUTH],
                   san=[x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue("client one", client_key, ca.subject, ca_key, ca=False,
                   usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    (out / "ca.pem").write_bytes(pem(ca))
    (out / "server.pem").write_bytes(pem(server))
    (out / "server.key").write_bytes(key_pem(server_key))
    (out / "server-encrypted.key").write_bytes(key_pem(server_key, PASSWORD))
    (out / "client.pem").write_bytes(pem(client))
    (out / "client.key").write_bytes(key_pem(client_key))


def _with_openssl_cli(out: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=out, check=True, capture_output=True, timeout=60)

    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec_key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/O=arbiter tests/CN=test CA")
    for who, subj, ext in (
            ("server", "/O=arbiter tests/CN=localhost",
             "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
            ("client", "/O=arbiter tests/CN=client one", "extendedKeyUsage=clientAuth")):
        (out / f"{who}.ext").write_text(ext + "\n")
        run("req", "-new", *ec_key, "-keyout", f"{who}.key", "-out", f"{who}.csr",
            "-subj", subj)
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.pem", "-days", "1", "-extfile", f"{who}.ext")
    run("pkcs8", "-topk8", "-in", "server.key", "-out", "server-encrypted.key",
        "-passout", f"pass:{PASSWORD}")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tls")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl command is "
                        "available to make test certificates")
        _with_openssl_cli(out)
    else:
        _with_cryptography(out)
    return out


# ---------------------------------------------------------------- helpers


def start_tls(arbiter_process, certs: Path, *extra: str, loop: str = "uvloop",
              http: str = "httptools", key: str = "server.key"):
    return arbiter_process(["limits:app", "--worker-class", loop, "--http", http,
                            "--no-access-log", "--ssl-certfile", str(certs / "server.pem"),
                            "--ssl-keyfile", str(certs / key), *extra])


def client_context(certs: Path, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if with_cert:
        context.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    return context


def https(server) -> str:
    host, port = server.address
    return f"https://{host}:{port}"


def scope_of(server, context: ssl.SSLContext) -> dict:
    response = httpx.get(https(server) + "/scope", verify=context, timeout=10)
    assert response.status_code == 200
    return json.loads(response.text)


def socket_to(server, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(server.address, timeout=5)
    return context.wrap_socket(raw, server_hostname="localhost")


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_https_scope_has_the_tls_extension(arbiter_process, certs, loop, http) -> None:
    server = start_tls(arbiter_process, certs, loop=loop, http=http).wait_ready()
    context = client_context(certs)
    with httpx.Client(verify=context, timeout=10) as client:
        scope = json.loads(client.get(https(server) + "/scope").text)
    assert scope["scheme"] == "https"
    tls = scope["tls"]
    assert set(tls) == {"server_cert", "client_cert_chain", "client_cert_name",
                        "client_cert_error", "tls_version", "cipher_suite"}
    assert tls["server_cert"] == (certs / "server.pem").read_text()
    assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None
    with socket_to(server, context) as sock:  # what the client itself negotiated
        version, cipher = sock.version(), sock.cipher()[0]
    assert tls["tls_version"] == {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}[version]
    iana = {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}
    assert tls["cipher_suite"] == iana[cipher]
    # plain HTTP to the TLS port is not served as a request
    host, port = server.address
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{host}:{port}/scope", timeout=5)
    assert scope_of(server, context)["scheme"] == "https"  # and the worker is fine


def test_tls_1_2_and_its_cipher_suite_are_reported(arbiter_process, certs) -> None:
    server = start_tls(arbiter_process, certs).wait_ready()
    context = client_context(certs)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    tls = scope_of(server, context)["tls"]
    assert tls["tls_version"] == 0x0303
    assert tls["cipher_suite"] == 0xC02B  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256


@pytest.mark.parametrize("loop", LOOPS)
def test_client_certificate_reaches_the_scope(arbiter_process, certs, loop) -> None:
    server = start_tls(arbiter_process, certs, "--ssl-cert-reqs", "required",
                       "--ssl-ca-certs", str(certs / "ca.pem"), loop=loop).wait_ready()
    tls = scope_of(server, client_context(certs, with_cert=True))["tls"]
    assert tls["client_cert_chain"] == [(certs / "client.pem").read_text()]
    assert tls["client_cert_name"] == "CN=client one,O=arbiter tests"
    assert tls["client_cert_error"] is None
    with pytest.raises(httpx.HTTPError):  # required: no certificate, no request
        httpx.get(https(server) + "/scope", verify=client_context(certs), timeout=5)
    assert scope_of(server, client_context(certs, with_cert=True))["scheme"] == "https"


def test_encrypted_key_with_its_password(arbiter_process, certs) -> None:
    server = start_tls(arbiter_process, certs, "--ssl-keyfile-password", PASSWORD,
                       key="server-encrypted.key").wait_ready()
    assert scope_of(server, client_context(certs))["scheme"] == "https"


def refused_to_start(arbiter_process, args: list[str], message: str) -> str:
    server = arbiter_process(["limits:app", "--no-access-log", *args])
    code = server.wait_exit(20)
    assert code != 0
    stderr = server.stderr
    assert message in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.count("failed to boot") <= 1, "workers were restarted in a loop"
    return stderr


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "wrong-password",
                                  "no-password", "key-mismatch", "bad-ciphers"])
def test_bad_tls_settings_stop_with_a_clear_error(arbiter_process, certs, case) -> None:
    cert, key = str(certs / "server.pem"), str(certs / "server.key")
    encrypted = str(certs / "server-encrypted.key")
    args, message = {
        "missing-cert": (["--ssl-certfile", str(certs / "nope.pem"), "--ssl-keyfile", key],
                         f"--ssl-certfile {certs / 'nope.pem'}: No such file or directory"),
        "missing-key": (["--ssl-certfile", cert, "--ssl-keyfile", str(certs / "nope.key")],
                        f"--ssl-keyfile {certs / 'nope.key'}: No such file or directory"),
        "wrong-password": (["--ssl-certfile", cert, "--ssl-keyfile", encrypted,
                            "--ssl-keyfile-password", "wrong"], "wrong --ssl-keyfile-password"),
        "no-password": (["--ssl-certfile", cert, "--ssl-keyfile", encrypted],
                        "the key is encrypted; give its passphrase with --ssl-keyfile-password"),
        "key-mismatch": (["--ssl-certfile", cert, "--ssl-keyfile", str(certs / "client.key")],
                         "the key does not match the certificate"),
        "bad-ciphers": (["--ssl-certfile", cert, "--ssl-keyfile", key, "--ssl-ciphers",
                         "NO-SUCH-CIPHER"], "--ssl-ciphers 'NO-SUCH-CIPHER'"),
    }[case]
    refused_to_start(arbiter_process, args, message)


@pytest.mark.parametrize("loop", LOOPS)
def test_silent_client_on_tls_is_closed_after_timeout_header(arbiter_process, certs, loop):
    """A client that never starts the handshake is bounded by --timeout-header
    too (asyncio and uvloop would otherwise wait 60 s for it)."""
    server = start_tls(arbiter_process, certs, "--timeout-header", "1", loop=loop).wait_ready()
    with socket.create_connection(server.address, timeout=5) as sock:
        opened = time.monotonic()
        closed, data = wait_closed(sock, 5)
    print(f"silent TLS client ({loop}) closed after {closed - opened:.2f} s")
    assert 0.9 <= closed - opened <= 2.5
    assert data == b""
    assert scope_of(server, client_context(certs))["scheme"] == "https"


def client_hello(certs: Path) -> bytes:
    """The first flight of a real TLS client, made without a socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(certs).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("loop", LOOPS)
def test_stalled_tls_handshake_is_closed_without_an_http_answer(arbiter_process, certs, loop):
    """Half a ClientHello, then a stall: --timeout-header bounds the handshake,
    and a 408 has no place on a connection that never got to speak TLS."""
    server = start_tls(arbiter_process, certs, "--timeout-header", "1", loop=loop).wait_ready()
    hello = client_hello(certs)
    with socket.create_connection(server.address, timeout=5) as sock:
        opened = time.monotonic()
        sock.sendall(hello[:len(hello) // 2])
        closed, data = wait_closed(sock, 5)
    print(f"stalled TLS handshake ({loop}) closed after {closed - opened:.2f} s")
    assert 0.9 <= closed - opened <= 2.5
    assert data == b""


@pytest.mark.parametrize("loop", LOOPS)
def test_partial_head_over_tls_gets_408(arbiter_process, certs, loop) -> None:
    """Once TLS is up, a stalled head is answered as on plain HTTP, encrypted."""
    server = start_tls(arbiter_process, certs, "--timeout-header", "1", loop=loop).wait_ready()
    with socket_to(server, client_context(certs)) as sock:
        opened = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHo")
        closed, data = wait_closed(sock, 5)
    print(f"partial head over TLS ({loop}) answered after {closed - opened:.2f} s")
    assert 0.9 <= closed - opened <= 2.5
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
    assert data.count(b"HTTP/1.1 ") == 1, data


def test_rfc4514_names() -> None:
    from workers.http.server import rfc4514_name

    subject = ((("countryName", "FR"),), (("organizationName", "Acme, Inc."),),
               (("organizationalUnitName", "R&D"), ("userId", "42")),
               (("commonName", " #lead+\"x\"\\; <y> "),))
    assert rfc4514_name(subject) == ('CN=\\ #lead\\+\\"x\\"\\\\\\; \\<y\\>\\ ,'
                                     'OU=R&D+UID=42,O=Acme\\, Inc.,C=FR')
    assert rfc4514_name(((("commonName", "#1"),),)) == "CN=\\#1"  # only a leading #
    assert rfc4514_name(()) is None
    assert rfc4514_name(((("emailAddress", "a@b"),),)) == "emailAddress=a@b"


def test_openssl_cli_fallback_makes_usable_certificates(tmp_path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    _with_openssl_cli(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server-encrypted.key",
                            PASSWORD)
    context.load_verify_locations(tmp_path / "ca.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    client.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
