"""Pilot PKI for a Flower deployment: a CA, the SuperLink TLS certificate and SuperNode authentication keys."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID

from flcore.exceptions import ConfigError
from flcore.outputs import atomic_write

SITE_NAME_RULE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
_SITE_NAME = re.compile(SITE_NAME_RULE)
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_FIX = "Re-run `flsuite certs init --host ...` with every address the sites use to reach the SuperLink."
README = """Pilot PKI made by `flsuite certs init`. Which file goes where:

ca.crt                    -> every site and the coordinator (the trust root for the SuperLink's TLS certificate)
superlink.crt, .key       -> stay on the coordinator (the SuperLink's TLS certificate and key)
ca.key                    -> move offline (USB stick, vault); only needed to issue a new SuperLink certificate
sites/<name>.key          -> site <name> only, together with ca.crt (flower-supernode --auth-supernode-private-key)
sites/<name>.crt          -> site <name>, next to its key: its client certificate for federated XGBoost (fedxgb-hist)
sites/*.pub               -> stay on the coordinator, to register each site (flwr supernode register sites/<name>.pub)

Never send a site another site's key, and never copy ca.key or superlink.key off the coordinator.
"""


@dataclass(frozen=True)
class CertBundle:
    """Paths of a pilot PKI folder.

    Parameters
    ----------
    root : Path
        The folder.
    ca_cert, ca_key : Path
        The CA certificate and its private key (``ca_key`` is None once moved offline).
    server_cert, server_key : Path
        The SuperLink's TLS certificate and private key.
    site_keys : dict[str, Path]
        Site name to its OpenSSH private key (only the keys still present).
    site_public_keys : dict[str, Path]
        Site name to its OpenSSH public key (``.pub``).
    """

    root: Path
    ca_cert: Path
    ca_key: Path | None
    server_cert: Path
    server_key: Path
    site_keys: dict[str, Path]
    site_public_keys: dict[str, Path]


def _check_sites(sites: Sequence[str]) -> list[str]:
    if not sites:
        raise ConfigError("No site names given; name at least one site (e.g. --site hospital_a).")
    seen: set[str] = set()
    for name in sites:
        if not _SITE_NAME.fullmatch(name):
            raise ConfigError(
                f"Invalid site name {name!r}: a name must match {SITE_NAME_RULE} (1-64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit)."
            )
        if name.lower() in seen:
            raise ConfigError(f"Duplicate site name {name!r} (names are compared case-insensitively); use each once.")
        seen.add(name.lower())
    return list(sites)


def _parse_host(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) > 253 or labels[-1].isdigit() or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(
            f"Invalid host {host!r}: give an IP address (e.g. 10.0.0.5) or a DNS name (e.g. fl.example.org) by which "
            "the sites reach the SuperLink."
        )
    return x509.DNSName(host.lower())


def _check_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in [*hosts, *DEFAULT_HOSTS]:
        name = _parse_host(host)
        if name not in names:
            names.append(name)
    return names


def _write(path: Path, data: bytes, private: bool = False) -> None:
    # The suite's one writer: the temporary file is created 0600, so a private key is never readable by others.
    with atomic_write(path, "wb", permissions=0o600 if private else 0o644) as handle:
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(f"CN={common_name},O=flsuite pilot")


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(**enabled: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    flags = {name: False for name in (*names, "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")}
    return x509.KeyUsage(**(flags | enabled))


def _build(tmp: Path, sites: list[str], hosts: list[x509.GeneralName], days: int) -> None:
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    ca_cert = (
        _builder("flsuite pilot CA", _name("flsuite pilot CA"), ca_key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ca_aki, critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        _builder("flsuite SuperLink", ca_cert.subject, server_key, days)
        .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(ca_aki, critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    for stem, cert, key in (("ca", ca_cert, ca_key), ("superlink", server_cert, server_key)):
        _write(tmp / f"{stem}.crt", cert.public_bytes(Encoding.PEM))
        _write(tmp / f"{stem}.key", key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), private=True)
    (tmp / "sites").mkdir()
    for site in sites:
        key = ec.generate_private_key(ec.SECP384R1())
        ssh = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
        pub = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
        _write(tmp / "sites" / f"{site}.key", ssh, private=True)
        _write(tmp / "sites" / f"{site}.pub", pub + f" {site}\n".encode())
        # The same key's client certificate: the bank's identity in XGBoost's federated communicator
        # (strategy=fedxgb-hist), whose gRPC server accepts only clients the CA signed.
        client = (
            _builder(site, ca_cert.subject, key, days)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(ca_aki, critical=False)
            .sign(ca_key, hashes.SHA384())
        )
        _write(tmp / "sites" / f"{site}.crt", client.public_bytes(Encoding.PEM))
    _write(tmp / "README.txt", README.encode())


def init_certs(out: Path, sites: Sequence[str], hosts: Sequence[str] = DEFAULT_HOSTS, days: int = 365) -> CertBundle:
    """Create a pilot CA, the SuperLink's TLS certificate and one authentication key pair per site.

    Parameters
    ----------
    out : Path
        Folder to create; it must not exist or be empty (keys are never overwritten).
    sites : sequence of str
        Site names, each matching ``SITE_NAME_RULE``.
    hosts : sequence of str
        IP addresses and DNS names of the SuperLink; ``localhost`` and ``127.0.0.1`` are always added.
    days : int
        Validity of the certificates, in days.

    Returns
    -------
    CertBundle
        The paths written.

    Raises
    ------
    ConfigError
        If ``out`` is not empty, a site name or host is invalid, or ``days`` is not positive.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"Output folder {out} already exists and is not empty; keys are never overwritten. "
            "Choose another --out or remove that folder."
        )
    names, sans = _check_sites(sites), _check_hosts(hosts)
    if days < 1:
        raise ConfigError(f"Invalid certificate validity {days} days: give at least 1 day.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _build(tmp, names, sans, days)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(out)


def load_bundle(root: Path) -> CertBundle:
    """Read a folder made by :func:`init_certs`.

    Parameters
    ----------
    root : Path
        The folder.

    Returns
    -------
    CertBundle
        Its paths; ``ca_key`` is None and ``site_keys`` lacks entries for keys no longer present.

    Raises
    ------
    ConfigError
        If ``ca.crt``, ``superlink.crt`` or ``superlink.key`` is missing.
    """
    root = Path(root)
    for name in ("ca.crt", "superlink.crt", "superlink.key"):
        if not (root / name).is_file():
            raise ConfigError(f"Missing {root / name}: {root} is not a complete `flsuite certs init` folder.")
    pubs = {p.stem: p for p in sorted((root / "sites").glob("*.pub"))}
    keys = {name: p.with_suffix(".key") for name, p in pubs.items() if p.with_suffix(".key").is_file()}
    ca_key = root / "ca.key"
    return CertBundle(
        root=root,
        ca_cert=root / "ca.crt",
        ca_key=ca_key if ca_key.is_file() else None,
        server_cert=root / "superlink.crt",
        server_key=root / "superlink.key",
        site_keys=keys,
        site_public_keys=pubs,
    )


def check_server_cert(cert: Path, host: str) -> None:
    """Check that a SuperLink certificate is currently valid and names ``host``.

    Parameters
    ----------
    cert : Path
        PEM certificate.
    host : str
        IP address or DNS name the sites connect to.

    Raises
    ------
    ConfigError
        If the certificate is unreadable, expired or not yet valid, or its SAN does not cover ``host``.
    """
    try:
        certificate = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"Cannot read the certificate {cert}: {err}. {_FIX}") from err
    now = dt.datetime.now(dt.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ConfigError(
            f"Certificate {cert} is valid only from {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC (now {now:%Y-%m-%d %H:%M}). {_FIX}"
        )
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    dns = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    ips = san.get_values_for_type(x509.IPAddress)
    try:
        covered = ipaddress.ip_address(host) in ips
    except ValueError:
        covered = host.lower().rstrip(".") in dns
    if not covered:
        present = ", ".join([*dns, *map(str, ips)]) or "none"
        raise ConfigError(f"Certificate {cert} does not cover host {host!r} (its SANs: {present}). {_FIX}")


def public_key_line(private_key: Path) -> str:
    """The OpenSSH public key line (``ecdsa-sha2-nistp384 AAAA...``) of a site's private key.

    Parameters
    ----------
    private_key : Path
        OpenSSH private key, as written to ``sites/<name>.key``.

    Raises
    ------
    ConfigError
        If the file cannot be read or is not an unencrypted OpenSSH EC private key.
    """
    return _site_key(private_key).public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def pem_private_key(private_key: Path) -> bytes:
    """A site's OpenSSH private key as PEM (PKCS#8), the form gRPC's TLS reads (XGBoost's federated client).

    Raises
    ------
    ConfigError
        As :func:`public_key_line`.
    """
    return _site_key(private_key).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _site_key(private_key: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_ssh_private_key(Path(private_key).read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ConfigError(f"Cannot read the site key {private_key}: {err}.") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"Site key {private_key} is not an ECDSA key; Flower needs one (ssh-keygen -t ecdsa -b 384).")
    return key
