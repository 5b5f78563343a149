"""HTTPS to the hub: the certificate is verified, a private CA is trusted via sync_ca_bundle."""

from __future__ import annotations

import ssl

import pytest
from sync.synckit import HubThread, box_public_key, private_ca

from appliance.errors import HubCertificateError
from appliance.sync.client import HubClient


@pytest.fixture
def tls_hub(tmp_path):
    ca, cert, key = private_ca(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    hub = HubThread(tmp_path / "hub", ssl_context=context)
    yield hub, ca
    hub.close()


def test_a_private_ca_is_trusted_only_when_configured(tls_hub):
    hub, ca = tls_hub
    assert hub.url.startswith("https://")
    with pytest.raises(HubCertificateError, match="sync_ca_bundle"):
        HubClient(hub.url).enrol(hub.enrol_code(), "box", box_public_key())
    answer = HubClient(hub.url, ca_bundle=str(ca)).enrol(hub.enrol_code(), "box", box_public_key())
    assert HubClient(hub.url, answer["token"], ca_bundle=str(ca)).ping()["site"] == "Clinic A"
