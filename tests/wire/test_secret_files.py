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


def test_processes_making_the_key_at_once_all_get_the_same_one(tmp_path):
    """The hub's workers start together: one key wins, every one of them reads it."""
    import subprocess
    import sys

    path = tmp_path / "secrets" / "hub_session_key"
    code = (
        "import sys; from pathlib import Path; from appliance.wire.secret_files import"
        " random_secret; print(random_secret(Path(sys.argv[1])).hex())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert keys == {path.read_bytes().hex()}
    assert sorted(p.name for p in path.parent.iterdir()) == ["hub_session_key"]
