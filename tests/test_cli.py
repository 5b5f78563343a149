"""The command line as a user types it (click's runner, real data directory)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from click.testing import CliRunner
from helpers import FUNDUS_DIR, testdata

from appliance.cli import main

README = Path(__file__).parent.parent / "README.md"


def run(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_ingest_folder_then_list_studies_as_json(tmp_path):
    stick = tmp_path / "stick"
    (stick / "xray").mkdir(parents=True)
    shutil.copy(testdata("RG1_J2KI.dcm"), stick / "xray" / "IM0001")  # no extension
    shutil.copy(FUNDUS_DIR / "hrf_12_h.jpg", stick / "eye.jpg")
    (stick / "notes.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    data = str(tmp_path / "data")

    result = run("ingest", str(stick), "--data-dir", data, "--json", "--process")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["counts"] == {"stored": 2, "refused": 1}
    refused = [f for f in report["files"] if f["status"] == "refused"]
    assert refused[0]["reason"] == "This is a PDF document, not an image."

    again = json.loads(run("ingest", str(stick), "--data-dir", data, "--json").output)
    assert again["counts"] == {"duplicate": 2, "refused": 1}

    studies = json.loads(run("studies", "--data-dir", data, "--json").output)
    assert len(studies) == 2
    chest = next(s for s in studies if s["patient_id"] == "9RG1")
    [image] = chest["images"]
    assert image["modality"] == "CR" and image["state"] == "decoded"
    assert image["decode_info"]["inverted"] is True and image["job_state"] == "done"

    text = run("studies", "--data-dir", data).output
    assert "CompressedSamples^RG1" in text


def test_ingest_a_single_bad_file_keeps_a_copy_in_quarantine(tmp_path):
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(testdata("RG1_UNCR.dcm").read_bytes()[:5000])
    data = str(tmp_path / "data")
    result = run("ingest", str(bad), "--data-dir", data)
    assert result.exit_code == 0
    assert "quarantined: scan.dcm: The file is incomplete" in result.output
    rows = json.loads(run("quarantine", "--data-dir", data, "--json").output)
    assert rows[0]["original_name"] == "scan.dcm"
    assert (Path(data) / rows[0]["stored_path"]).stat().st_size == 5000


def test_migrate_is_idempotent(tmp_path):
    data = str(tmp_path / "data")
    assert "applied: m001_initial, m002_results" in run("migrate", "--data-dir", data).output
    assert "up to date" in run("migrate", "--data-dir", data).output


def test_bad_setting_is_a_one_line_error_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_PORT", "eighty")
    result = CliRunner().invoke(main, ["studies", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error: setting 'port' from environment APPLIANCE_PORT" in result.output


def test_every_command_is_documented_in_the_readme():
    readme = README.read_text()
    documented = set(re.findall(r"appliance ([a-z]+)", readme))
    missing = set(main.commands) - documented
    assert not missing, f"README does not mention: {sorted(missing)}"
