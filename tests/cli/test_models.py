"""``appliance models ...`` as typed: keygen, pack, trust, install, list, compare,
activate, rollback; a refused file says why and exits 1."""

from __future__ import annotations

import json

from click.testing import CliRunner
from lifecycle.modelkit import NAME, NEW, SHIPPED, new_version

from appliance.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), env={"APPLIANCE_DATA_DIR": None})


def test_the_programme_signs_the_box_trusts_installs_activates_and_rolls_back(tmp_path):
    data = str(tmp_path / "box")
    key = tmp_path / "programme.key"
    made = run("models", "keygen", str(key))
    assert made.exit_code == 0, made.output
    assert run("models", "keygen", str(key)).exit_code == 1  # never overwritten
    bundle = new_version(tmp_path / "built")
    signed = tmp_path / "new.tar.gz"
    packed = run("models", "pack", str(bundle), "--key", str(key), "--out", str(signed), "--json")
    assert packed.exit_code == 0, packed.output
    assert json.loads(packed.output)["version"] == NEW

    refused = run("models", "install", str(signed), "--data-dir", data)
    assert refused.exit_code == 1 and "does not trust" in refused.output
    shown = run("models", "list", "--data-dir", data).output
    assert f"{NAME}     {NEW}      refused" in shown and "cxr-pneumonia" in shown
    trusted = run("models", "trust", f"{key}.pub", "--data-dir", data)
    assert trusted.exit_code == 0 and "trusted key" in trusted.output
    done = run("models", "install", str(signed), "--data-dir", data, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["state"] == "shadow"

    listed = json.loads(run("models", "list", "--data-dir", data, "--json").output)
    mine = {r["version"]: r for r in listed if r["name"] == NAME}
    assert mine[SHIPPED]["state"] == "active" and mine[NEW]["state"] == "shadow"
    assert mine[NEW]["key_id"] == json.loads(packed.output)["key_id"]
    assert {r["state"] for r in listed if r["name"] == NAME} == {"active", "shadow"}
    assert {r["name"] for r in listed if r["state"] == "active"} == {
        NAME,
        "cxr-pneumonia",
        "fundus-referable-dr",
        "modality-router",
    }

    assert "no shadow results" in run("models", "compare", NAME, "--data-dir", data).output
    activated = run("models", "activate", NAME, NEW, "--data-dir", data)
    assert activated.exit_code == 0 and f"was {SHIPPED}" in activated.output
    back = run("models", "rollback", NAME, "--data-dir", data, "--json")
    assert back.exit_code == 0 and json.loads(back.output)["version"] == SHIPPED
    missing = run("models", "activate", NAME, "9.9.9", "--data-dir", data)
    assert missing.exit_code == 1 and "not installed" in missing.output
