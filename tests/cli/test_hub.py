"""``appliance hub ...`` as typed: admins, and importing what ``appliance sync export`` wrote."""

from __future__ import annotations

from click.testing import CliRunner
from sync.synckit import make_backlog

from appliance.cli import main


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, env={"APPLIANCE_DATA_DIR": None})


def test_create_admin_asks_for_a_long_enough_password(tmp_path):
    hub_dir = str(tmp_path / "hub")
    short = run("hub", "create-admin", "--data-dir", hub_dir, input="short\nshort\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    ok = run("hub", "create-admin", "--data-dir", hub_dir, input="long enough pw\n" * 2)
    assert ok.exit_code == 0 and "hub admin admin set" in ok.output


def test_export_then_hub_import_twice(tmp_path, box, hub):
    store, config = box
    make_backlog(store, 20)
    bundle = tmp_path / "stick.bundle"
    out = run("sync", "export", "--data-dir", str(config.data_dir), "--to", str(bundle))
    assert out.exit_code == 0 and "20 entries written" in out.output
    first = run("hub", "import", str(bundle), "--data-dir", str(hub.data_dir))
    assert first.exit_code == 0 and "20 entries imported" in first.output
    second = run("hub", "import", str(bundle), "--data-dir", str(hub.data_dir))
    assert "already imported: nothing changed" in second.output
    bundle.write_text(bundle.read_text().replace('"payload": "H4', '"payload": "H5'))
    tampered = run("hub", "import", str(bundle), "--data-dir", str(hub.data_dir))
    assert tampered.exit_code == 1 and "Error:" in tampered.output
