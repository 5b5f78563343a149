"""HTTPS to the hub: the certificate is verified, a private CA is trusted via sync_ca_bundle."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sync.synckit import HubThread, box_public_key

from appliance.errors import HubCertificateError
from appliance.sync.client import HubClient


def certificate(subject: str, issuer_key, issuer_name, public_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls_hub(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Programme CA")])
    ca_cert = certificate("Programme CA", ca_key, ca_name, ca_key.public_key(), ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("hub", ca_key, ca_name, key.public_key(), ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (tmp_path / "hub.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "hub.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "hub.pem", tmp_path / "hub.key")
    hub = HubThread(tmp_path / "hub", ssl_context=context)
    yield hub, tmp_path / "ca.pem"
    hub.close()


def test_a_private_ca_is_trusted_only_when_configured(tls_hub):
    hub, ca = tls_hub
    assert hub.url.startswith("https://")
    with pytest.raises(HubCertificateError, match="sync_ca_bundle"):
        HubClient(hub.url).enrol(hub.enrol_code(), "box", box_public_key())
    answer = HubClient(hub.url, ca_bundle=str(ca)).enrol(hub.enrol_code(), "box", box_public_key())
    assert HubClient(hub.url, answer["token"], ca_bundle=str(ca)).ping()["site"] == "Clinic A"
