"""Enrolling this box with a hub: one function for ``appliance sync enrol`` and the
System page's form, so both make the same checks and leave the same files.

The hub checks the one-time code (``appliance hub enrol-code``); the box keeps what it
answers (device id, site, token) in ``secrets/sync_device.json`` and the hub's URL in
``config.toml``. A running ``appliance serve`` notices the new identity on its next look
(``SyncWorker.run_forever``) and starts sending: no restart.
"""

from __future__ import annotations

import platform
import re

from appliance.config import Config, save_settings
from appliance.errors import HubRejectedError
from appliance.sync.client import HubClient
from appliance.sync.identity import Identity, device_key, save_identity
from appliance.wire.bundle import public_key_text

# What the hub checks too (1-40 characters): refused here before anything is sent.
CODE = re.compile(r"[A-Za-z0-9-]{1,40}")


class EnrolmentCodeError(HubRejectedError):
    """An enrolment code that cannot be one (refused before asking the hub)."""


def enrol(config: Config, hub_url: str, code: str, name: str | None = None) -> Identity:
    """Use ``code`` at the hub at ``hub_url``; store the identity it gives and the URL.
    Raises a ``SyncError`` (bad URL, hub unreachable, certificate, code refused) and
    changes nothing then."""
    hub_url, code = hub_url.strip(), code.strip().replace(" ", "")
    if not CODE.fullmatch(code):
        raise EnrolmentCodeError("an enrolment code has only letters, digits and dashes")
    client = HubClient(  # checks the URL first: a wrong one leaves no file behind
        hub_url, ca_bundle=config.sync_ca_bundle, timeout=config.sync_timeout_seconds
    )
    key = device_key(config.data_dir)
    answer = client.enrol(code, name or platform.node() or "box", public_key_text(key))
    identity = Identity(hub_url.rstrip("/"), answer["device_id"], answer["site"], answer["token"])
    save_identity(config.data_dir, identity)
    save_settings(config, {"sync_hub_url": identity.hub_url})
    return identity
