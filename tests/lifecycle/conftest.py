"""Fixtures: a programme key, the new version signed with it, a box trusting it."""

from __future__ import annotations

from pathlib import Path

import pytest
from lifecycle.modelkit import NAME, NEW, new_version

from appliance.lifecycle.keys import trust
from appliance.lifecycle.pack import pack
from appliance.wire.model_signature import new_key


@pytest.fixture
def programme_key(tmp_path) -> tuple[Path, str]:
    key = tmp_path / "programme.key"
    return key, new_key(key)


@pytest.fixture
def signed_file(tmp_path, programme_key) -> Path:
    """The new version, packed and signed with the programme key."""
    bundle = new_version(tmp_path / "built")
    out = tmp_path / f"{NAME}-{NEW}.tar"
    pack(bundle, programme_key[0], out)
    return out


@pytest.fixture
def trusting_box(config, store, programme_key):
    """The box's (store, config), trusting the programme key."""
    trust(config.data_dir, programme_key[1])
    return store, config
