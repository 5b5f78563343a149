"""Secrets are the owner's alone from the first byte, and a key is made once."""

from __future__ import annotations

import stat

from appliance.wire.secret_files import random_secret, write_secret


def test_a_secret_is_0600_and_replaced_whole(tmp_path):
    path = tmp_path / "secrets" / "token"
    write_secret(path, b"one")
    write_secret(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["token"]  # no .tmp left behind


def test_a_random_key_is_made_on_first_use_and_kept(tmp_path):
    path = tmp_path / "secrets" / "key"
    first = random_secret(path)
    assert len(first) == 32 and random_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
