"""``appliance training export`` as a clinic runs it (issue 27): ingest, outcomes import,
export with the consent policy from the environment; JSON counts; nothing leaves where
the policy says never."""

from __future__ import annotations

import json

from click.testing import CliRunner
from helpers import TESTS

from appliance.cli import main
from appliance.wire.training_verify import verify_export

CXR = TESTS / "data" / "cxr64"
FILES = ("person1022_virus_1712.png", "NORMAL2-IM-0468-0001.png", "IM-0135-0001.png")


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def clinic(tmp_path) -> str:
    data = str(tmp_path / "data")
    ingested = run("ingest", *(str(CXR / f) for f in FILES), "--process", "--data-dir", data)
    assert ingested.exit_code == 0
    register = tmp_path / "lab.csv"
    register.write_text(
        "original_name,test,result,date\r\n"
        f"{FILES[0]},xpert,positive,2026-03-01\r\n"
        f"{FILES[1]},xpert,negative,2026-03-01\r\n"
    )
    assert run("outcomes", "import", str(register), "--data-dir", data).exit_code == 0
    return data


def test_export_with_consent_from_the_environment_prints_its_counts(tmp_path):
    data = clinic(tmp_path)
    usb = tmp_path / "usb"
    never = run("training", "export", "--to", str(usb), "--json", "--data-dir", data)
    assert never.exit_code == 0
    assert json.loads(never.output) | {"warnings": []} == {
        "images": 0, "labelled": 0, "weak": 0, "skipped_no_consent": 3,
        "skipped_no_outcome": 0, "skipped_unreadable": 0, "to": None, "warnings": [],
    }
    assert not usb.exists()
    always = {"APPLIANCE_TRAINING_CONSENT": "always"}
    done = run("training", "export", "--to", str(usb), "--json", "--data-dir", data, env=always)
    counts = json.loads(done.output)
    assert {k: counts[k] for k in ("images", "labelled", "skipped_no_consent",
                                   "skipped_no_outcome")} == {
        "images": 2, "labelled": 2, "skipped_no_consent": 0, "skipped_no_outcome": 1,
    }
    manifest = verify_export(counts["to"]).manifest
    assert manifest["consent_policy"] == "always" and manifest["site"] == "Clinic"
    assert manifest["device_id"].startswith("box-") and counts["to"].startswith(str(usb))
    text = run("training", "export", "--to", str(tmp_path / "other"), "--model",
               "fundus-referable-dr", "--data-dir", data, env=always).output
    assert "Nothing exported" in text


def test_a_bad_date_or_policy_is_refused_clearly(tmp_path):
    data = str(tmp_path / "data")
    bad_date = run("training", "export", "--to", str(tmp_path / "x"), "--since", "3/1/2026",
                   "--data-dir", data)
    assert bad_date.exit_code == 2 and "YYYY-MM-DD" in bad_date.output
    bad_policy = CliRunner().invoke(
        main, ["training", "export", "--to", str(tmp_path / "x"), "--data-dir", data],
        env={"APPLIANCE_TRAINING_CONSENT": "sometimes"},
    )
    assert bad_policy.exit_code == 1 and "training_consent" in bad_policy.output
