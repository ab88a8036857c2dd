"""TLS material for a spawned broker: a cluster CA, the broker's certificate, one client
certificate per node (CN = node id).  Made with `cryptography`; keys are P-256, files 0600."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.cluster.config import ClusterConfig

VALID_DAYS = 825


def ensure_tls(cfg: ClusterConfig) -> list[Path]:
    """Create what is missing under data_dir/tls; return the certificates created."""
    tls = cfg.tls_dir
    made: list[Path] = []
    ca_crt, ca_key = tls / "ca.crt", tls / "ca.key"
    if not ca_crt.exists():
        _write_pair(ca_crt, ca_key, *_self_signed_ca(f"tally {cfg.name} CA"))
        made.append(ca_crt)
    ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    wanted = {tls / "broker": ("broker", True)}
    wanted |= {tls / "nodes" / n.id: (n.id, False) for n in cfg.nodes}
    for stem, (cn, server) in wanted.items():
        crt = stem.with_suffix(".crt")
        if not crt.exists():
            _write_pair(crt, stem.with_suffix(".key"), *issue(ca, signer, cn, server))
            made.append(crt)
    return made


def issue(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for `cn` signed by the CA: a server's names loopback, a client's is for
    client authentication only."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _builder(cn, key, ca.subject).add_extension(
        x509.ExtendedKeyUsage([usage]), critical=False
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    return builder.sign(ca_key, hashes.SHA256()), key


def _self_signed_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = _builder(cn, key, name).add_extension(
        x509.BasicConstraints(ca=True, path_length=0), critical=True
    )
    return builder.sign(key, hashes.SHA256()), key


def _builder(
    cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _write_pair(
    crt: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    crt.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def client_context(ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """Trust only `ca`; present the node's certificate when there is one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context
