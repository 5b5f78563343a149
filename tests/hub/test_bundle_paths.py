"""``hub publish`` makes the boxes' own check before it keeps a bundle file (issue 25,
findings 6 and 9): a correctly signed file whose manifest names an absolute or escaping
path, or whose tar holds a member outside ``bundle/``, a link or a device, is refused
with a message naming it, on SQLite and PostgreSQL, and nothing is kept to roll out."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from lifecycle.hostile_bundles import HOSTILE_CASES, hostile_cases, signed_bundle, tree
from sync.synckit import HubThread

from appliance.cli import main
from appliance.errors import ModelPackageError
from appliance.hub import distribution
from appliance.wire.model_signature import new_key


@pytest.fixture
def hub(tmp_path, database_url):
    server = HubThread(tmp_path / "hub", database_url)
    yield server
    server.close()


@pytest.fixture
def programme(tmp_path):
    key = tmp_path / "programme.key"
    return key, new_key(key)


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_publish_refuses_a_signed_file_a_box_would_refuse(hub, programme, tmp_path, case):
    listed, extra, reason = hostile_cases(tmp_path)[case]
    bad = signed_bundle(tmp_path / "hostile.tar", programme[0], listed, extra)
    conn = hub.conn()
    try:
        distribution.trust_key(conn, programme[1])
        before = tree(tmp_path)
        with pytest.raises(ModelPackageError, match=reason) as refused:
            distribution.publish(conn, hub.data_dir, bad)
        assert str(refused.value).startswith("hostile.tar not published: ")
        assert distribution.published(conn) == []  # nothing to roll out
    finally:
        conn.close()
    assert tree(tmp_path) - before <= {"hub/models"}  # the folder, with nothing in it
    assert not any((hub.data_dir / "models").glob("*"))
    assert not (tmp_path / "outside").exists()


def test_the_publish_command_says_why_it_refuses(programme, tmp_path):
    hub_dir = str(tmp_path / "hubdir")
    runner = CliRunner()

    def run(*args):
        return runner.invoke(
            main, ["hub", *args, "--data-dir", hub_dir], env={"APPLIANCE_DATA_DIR": None}
        )

    assert run("trust-model-key", programme[1]).exit_code == 0
    listed, extra, _reason = hostile_cases(tmp_path)["absolute-in-manifest"]
    bad = signed_bundle(tmp_path / "hostile.tar", programme[0], listed, extra)
    refused = run("publish", str(bad))
    assert refused.exit_code == 1
    assert "hostile.tar not published" in refused.output
    assert "an absolute path, outside the bundle" in refused.output
    extra_member = signed_bundle(
        tmp_path / "extra.tar", programme[0], *hostile_cases(tmp_path)["outside-bundle-folder"][:2]
    )
    refused = run("publish", str(extra_member))
    assert refused.exit_code == 1 and "run.sh: not part of a bundle file" in refused.output
    good = signed_bundle(tmp_path / "good.tar", programme[0])
    assert run("publish", str(good)).exit_code == 0
