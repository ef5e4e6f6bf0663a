"""The stand-in's certificates and tokens, kept where real k3s keeps them.

``server/tls/server-ca.{crt,key}`` signs the API's serving certificate, ``client-ca.{crt,key}``
signs client certificates (the admin kubeconfig's). Tokens have k3s's secure format
``K10<sha256 of the server CA bundle>::server:<password>``; a short user-given token is the
password itself, as in real k3s (k3s-io/k3s v1.34.2+k3s1 ``pkg/clientaccess/token.go``:
``parseToken`` reads a token without the ``K10`` prefix as ``K10:::<token>``, i.e. no CA hash
and the whole token as the password; ``FormatTokenBytes`` writes ``K10`` + ``hashCA`` + ``::``
+ ``<user>:<password>``; ``hashCA`` of a bundle with one certificate is the sha256 of the PEM
file's bytes). The stand-in does not refuse a CA hash of the wrong length ("invalid token CA
hash length") nor bootstrap-token (``<id>.<secret>``) credentials.

Example::

    tls = ensure_ca(Path("/var/lib/rancher/k3s/server/tls"))
    format_token(tls.ca_hash, "s3cret")    # "K10<64 hex>::server:s3cret"
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class Token:
    """A parsed join token: the CA hash it pins (or None for a bare token) and the password."""

    ca_hash: str | None
    username: str
    password: str


def parse_token(token: str) -> Token:
    """``K10<hash>::<user>:<password>`` or a bare password (token.go ``parseToken``; the user
    is empty there, callers override it with ``WithUser``: ``node`` here)."""
    token = token.strip()
    if token.startswith("K10") and "::" in token:
        ca_hash, credentials = token[3:].split("::", 1)
        username, _, password = credentials.partition(":")
        return Token(ca_hash or None, username, password)
    return Token(None, "node", token)


def format_token(ca_hash: str, password: str, username: str = "server") -> str:
    """The secure token form real k3s writes to server/token (token.go ``FormatTokenBytes``)."""
    return f"K10{ca_hash}::{username}:{password}"


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file with ``mode`` from its creation (no window where it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _ca(common_name: str) -> tuple[bytes, bytes]:
    """A self-signed CA (K3s's are ECDSA P-256, ``CN=k3s-<name>-ca@<unix time>``: the form of
    the CAs real k3s servers present; the code that names them was not read at the pinned
    tag)."""
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    *,
    organization: str | None = None,
    server_names: list[str] | None = None,
    client: bool = False,
) -> tuple[bytes, bytes]:
    """Issue a leaf certificate (serving when server_names is given, else client)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names:
        alt: list[x509.GeneralName] = []
        for entry in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                alt.append(x509.DNSName(entry))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def cert_names(cert_pem: bytes) -> set[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(alt.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in alt.get_values_for_type(x509.IPAddress)
    }


@dataclass(frozen=True)
class ClusterTLS:
    """Paths of the cluster CAs and the hash that pins the server CA in tokens."""

    directory: Path

    @property
    def server_ca(self) -> Path:
        return self.directory / "server-ca.crt"

    @property
    def client_ca(self) -> Path:
        return self.directory / "client-ca.crt"

    @property
    def ca_hash(self) -> str:
        return hashlib.sha256(self.server_ca.read_bytes()).hexdigest()

    def pair(self, name: str) -> tuple[bytes, bytes]:
        return (
            (self.directory / f"{name}.crt").read_bytes(),
            (self.directory / f"{name}.key").read_bytes(),
        )

    def store_pair(self, name: str, cert: bytes, key: bytes) -> None:
        write_private(self.directory / f"{name}.crt", cert, 0o644)
        write_private(self.directory / f"{name}.key", key)


def ensure_ca(directory: Path, bundle: dict[str, bytes] | None = None) -> ClusterTLS:
    """Create the cluster CAs once (or install them from a joined server's bundle).

    ``request-header-ca`` signs the front's ``client-auth-proxy`` certificate that
    kube-apiserver trusts for X-Remote-User/X-Remote-Group (K3s's RequestHeaderCA,
    k3s-io/k3s pkg/daemons/control/deps/deps.go).
    """
    tls = ClusterTLS(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("server-ca", "client-ca", "request-header-ca"):
        if bundle is not None and f"{name}.crt" in bundle:
            tls.store_pair(name, bundle[f"{name}.crt"], bundle[f"{name}.key"])
        elif not (directory / f"{name}.crt").exists():
            tls.store_pair(name, *_ca(f"k3s-{name}@{int(time.time())}"))
    return tls


def ensure_serving(tls: ClusterTLS, names: list[str]) -> tuple[Path, Path]:
    """The API's serving certificate, reissued only when it lacks one of ``names``."""
    crt = tls.directory / "serving-kube-apiserver.crt"
    if not crt.exists() or not set(names) <= cert_names(crt.read_bytes()):
        tls.store_pair(
            "serving-kube-apiserver",
            *issue(*tls.pair("server-ca"), "kube-apiserver", server_names=names),
        )
    return crt, tls.directory / "serving-kube-apiserver.key"


def ensure_client(
    tls: ClusterTLS, name: str, common_name: str, organization: str
) -> tuple[bytes, bytes]:
    """A client certificate signed by the client CA (for example client-admin)."""
    if not (tls.directory / f"{name}.crt").exists():
        tls.store_pair(
            name,
            *issue(*tls.pair("client-ca"), common_name, organization=organization, client=True),
        )
    return tls.pair(name)


def ensure_service_key(tls: ClusterTLS) -> Path:
    """``service.key``: the RSA key that signs and verifies service-account tokens (K3s's
    ``runtime.ServiceKey``, passed to kube-apiserver and kube-controller-manager)."""
    path = tls.directory / "service.key"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
        )
    return path
