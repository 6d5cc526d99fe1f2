"""Tests of the pilot PKI (flcore.deploy.certs): files, formats, validation and a real TLS handshake."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from flcore.deploy import certs
from flcore.deploy.certs import CertBundle, check_server_cert, init_certs, load_bundle, public_key_line
from flcore.exceptions import ConfigError, FlsuiteUserError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    out = tmp_path_factory.mktemp("pki") / "certs"
    return init_certs(out, ["hospital_a", "bank-2.eu"], hosts=["fl.example.org", "10.0.0.5"])


def test_init_writes_every_file_with_private_keys_0600(bundle: CertBundle) -> None:
    root = bundle.root
    expected = {"README.txt", "ca.crt", "ca.key", "superlink.crt", "superlink.key", "sites"}
    assert {p.name for p in root.iterdir()} == expected
    assert {p.name for p in (root / "sites").iterdir()} == {
        "hospital_a.key",
        "hospital_a.pub",
        "hospital_a.crt",
        "bank-2.eu.key",
        "bank-2.eu.pub",
        "bank-2.eu.crt",
    }
    for key in (bundle.ca_key, bundle.server_key, *bundle.site_keys.values()):
        assert key is not None and _mode(key) == 0o600, key
    assert bundle.site_keys == {n: root / "sites" / f"{n}.key" for n in ("bank-2.eu", "hospital_a")}
    assert bundle.site_public_keys == {n: root / "sites" / f"{n}.pub" for n in ("bank-2.eu", "hospital_a")}
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    readme = (root / "README.txt").read_text()
    for name in ("ca.crt", "ca.key", "superlink.crt", "superlink.key", "sites/<name>.key", "sites/*.pub", "offline"):
        assert name in readme


def test_ca_and_server_certificate(bundle: CertBundle) -> None:
    ca, server = _cert(bundle.ca_cert), _cert(bundle.server_cert)
    server.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(ca)  # self-signed
    for cert in (ca, server):
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]

    ca_bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_bc.critical and ca_bc.value.ca
    ca_ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ca_ku.critical and ca_ku.value.key_cert_sign and ca_ku.value.crl_sign
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)

    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    aki = server.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "fl.example.org"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.5"),
    }

    server_key = serialization.load_pem_private_key(bundle.server_key.read_bytes(), password=None)
    assert server_key.public_key() == server.public_key()
    assert bundle.server_key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8
    assert bundle.ca_key is not None and bundle.ca_key.read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_site_keys_are_openssh_ecdsa_p384(bundle: CertBundle) -> None:
    for name, key_path in bundle.site_keys.items():
        assert key_path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        private = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        line = bundle.site_public_keys[name].read_text().strip()
        kind, blob, comment = line.split(" ")
        assert kind == "ecdsa-sha2-nistp384" and blob.startswith("AAAA") and comment == name
        assert serialization.load_ssh_public_key(line.encode()) == private.public_key()
        assert public_key_line(key_path) == f"{kind} {blob}"
    first, second = bundle.site_public_keys.values()
    assert first.read_text().split()[1] != second.read_text().split()[1]


def test_hosts_default_to_localhost_and_are_deduplicated(tmp_path: Path) -> None:
    made = init_certs(tmp_path / "pki", ["s1"], hosts=["LOCALHOST", "127.0.0.1", "::1"])
    san = _cert(made.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]


def test_empty_existing_folder_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    made = init_certs(tmp_path / "pki", ["s1"])
    assert made.server_cert.is_file() and made.site_keys["s1"].is_file()


def test_refuses_non_empty_folder_and_leaves_it_untouched(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    out.mkdir()
    (out / "ca.key").write_text("precious")
    with pytest.raises(ConfigError, match=r"already exists and is not empty.*another --out or remove") as info:
        init_certs(out, ["s1"])
    assert str(out) in str(info.value)
    assert isinstance(info.value, FlsuiteUserError)
    assert [p.name for p in out.iterdir()] == ["ca.key"]
    assert (out / "ca.key").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["pki"]


@pytest.mark.parametrize("bad", ["", "-lead", ".hidden", "has space", "a/b", "x" * 65, "ünï", "trail\n"])
def test_rejects_bad_site_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"Invalid site name .*must match"):
        init_certs(tmp_path / "pki", ["ok", bad])
    assert not (tmp_path / "pki").exists()
    assert list(tmp_path.iterdir()) == []


def test_rejects_duplicate_and_missing_site_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Duplicate site name 'Bank'"):
        init_certs(tmp_path / "pki", ["bank", "Bank"])
    with pytest.raises(ConfigError, match=r"Duplicate site name 'a'"):
        init_certs(tmp_path / "pki", ["a", "a"])
    with pytest.raises(ConfigError, match=r"No site names"):
        init_certs(tmp_path / "pki", [])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "bad", ["", "bad host", "-x.org", "a..b", "under_score.org", "999.1.1.1", "[::1]", "x." * 130, "host.org\n"]
)
def test_rejects_bad_hosts(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"Invalid host"):
        init_certs(tmp_path / "pki", ["s1"], hosts=["fl.example.org", bad])
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = certs._write
    calls: list[Path] = []

    def failing_write(path: Path, data: bytes, private: bool = False) -> None:
        calls.append(path)
        if path.name == "b.key":
            raise OSError("disk full")
        real_write(path, data, private)

    monkeypatch.setattr(certs, "_write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        init_certs(tmp_path / "pki", ["a", "b"])
    assert len(calls) > 4  # it failed after writing the CA, the SuperLink files and site a
    assert list(tmp_path.iterdir()) == []


def test_rejects_non_positive_days(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"at least 1 day"):
        init_certs(tmp_path / "pki", ["s1"], days=0)


def test_load_bundle_round_trip(bundle: CertBundle) -> None:
    assert load_bundle(bundle.root) == bundle


def test_load_bundle_without_private_keys(tmp_path: Path) -> None:
    made = init_certs(tmp_path / "pki", ["a", "b"])
    assert made.ca_key is not None
    made.ca_key.unlink()  # moved offline
    made.site_keys["a"].unlink()  # handed to the site
    loaded = load_bundle(made.root)
    assert loaded.ca_key is None
    assert loaded.site_keys == {"b": made.site_keys["b"]}
    assert loaded.site_public_keys == made.site_public_keys


@pytest.mark.parametrize("missing", ["ca.crt", "superlink.crt", "superlink.key"])
def test_load_bundle_names_the_missing_file(tmp_path: Path, missing: str) -> None:
    made = init_certs(tmp_path / "pki", ["a"])
    (made.root / missing).unlink()
    with pytest.raises(ConfigError, match="Missing .*" + re.escape(missing)):
        load_bundle(made.root)


def test_check_server_cert(bundle: CertBundle) -> None:
    for host in ("127.0.0.1", "localhost", "LocalHost", "fl.example.org", "10.0.0.5"):
        check_server_cert(bundle.server_cert, host)
    with pytest.raises(
        ConfigError, match=r"does not cover host '10\.9\.9\.9'.*127\.0\.0\.1.*flsuite certs init --host"
    ):
        check_server_cert(bundle.server_cert, "10.9.9.9")
    with pytest.raises(ConfigError, match=r"does not cover host 'other\.example\.org'.*fl\.example\.org"):
        check_server_cert(bundle.server_cert, "other.example.org")
    with pytest.raises(ConfigError, match=r"Cannot read the certificate"):
        check_server_cert(bundle.root / "nope.crt", "127.0.0.1")


def test_check_server_cert_rejects_expired(tmp_path: Path, bundle: CertBundle) -> None:
    ca_key = serialization.load_pem_private_key(bundle.ca_key.read_bytes(), password=None)  # type: ignore[union-attr]
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    server = _cert(bundle.server_cert)
    now = dt.datetime.now(dt.UTC)
    expired = (
        x509.CertificateBuilder()
        .subject_name(server.subject)
        .issuer_name(server.issuer)
        .public_key(server.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, critical=False)
        .sign(ca_key, server.signature_hash_algorithm)  # type: ignore[arg-type]
    )
    path = tmp_path / "expired.crt"
    path.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError, match=r"expired\.crt is valid only from .*flsuite certs init"):
        check_server_cert(path, "127.0.0.1")


def test_public_key_line_rejects_non_keys(tmp_path: Path, bundle: CertBundle) -> None:
    with pytest.raises(ConfigError, match=r"Cannot read the site key"):
        public_key_line(bundle.server_cert)
    with pytest.raises(ConfigError, match=r"Cannot read the site key"):
        public_key_line(tmp_path / "missing.key")


def _serve_once(bundle: CertBundle) -> tuple[int, threading.Thread]:
    """Accept one TLS connection on 127.0.0.1 with the SuperLink certificate; return the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(bundle.server_cert, bundle.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            conn.settimeout(10)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass  # the client refused the certificate

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def _connect(port: int, cafile: Path, server_hostname: str) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default: AKI/SKI and key usage must be right
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.recv(2)


@pytest.mark.parametrize("server_hostname", ["127.0.0.1", "localhost", "fl.example.org"])
def test_tls_handshake_with_pilot_ca(bundle: CertBundle, server_hostname: str) -> None:
    port, thread = _serve_once(bundle)
    assert _connect(port, bundle.ca_cert, server_hostname) == b"ok"
    thread.join(10)


def test_tls_handshake_fails_with_another_ca(tmp_path: Path, bundle: CertBundle) -> None:
    other = init_certs(tmp_path / "other", ["s1"])
    port, thread = _serve_once(bundle)
    with pytest.raises(ssl.SSLCertVerificationError):
        _connect(port, other.ca_cert, "127.0.0.1")
    thread.join(10)


def test_tls_handshake_fails_for_host_not_in_san(bundle: CertBundle) -> None:
    port, thread = _serve_once(bundle)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _connect(port, bundle.ca_cert, "other.example.org")
    thread.join(10)
