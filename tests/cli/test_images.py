"""Images in and out through the command line: ingest, studies, quarantine, screen, results
(click's runner, real data directory)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from helpers import FUNDUS_DIR, testdata

from appliance.cli import main


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


SCREEN_KEYS = {
    "file",
    "route",
    "reason",
    "probability",
    "score",
    "triage",
    "model",
    "backend",
    "timings_ms",
}


def test_screen_prints_one_json_object_per_file_and_exits_0_when_refusing(tmp_path):
    pdf = tmp_path / "letter.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")
    files = [testdata("RG1_J2KI.dcm"), FUNDUS_DIR / "hrf_07_h.jpg", testdata("CT_small.dcm"), pdf]
    result = run("screen", *map(str, files), "--json", "--data-dir", str(tmp_path / "none"))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [line["route"] for line in lines] == ["chest_xray", "fundus", "refused", "refused"]
    assert all(SCREEN_KEYS <= set(line) for line in lines)
    chest, fundus, ct, letter = lines
    assert 0 <= chest["score"] <= 100 and chest["triage"] in ("urgent", "review", "routine")
    assert chest["model"]["name"] == "cxr-pneumonia" and chest["backend"] == "onnxruntime"
    assert fundus["model"]["name"] == "fundus-referable-dr"
    assert "CT scan" in ct["reason"] and ct["score"] is None
    assert letter["reason"] == "This is a PDF document, not an image."
    assert not (tmp_path / "none").exists()  # nothing stored, no data dir made


def test_screen_with_a_broken_installation_exits_non_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(tmp_path / "empty"))
    result = CliRunner().invoke(main, ["screen", str(FUNDUS_DIR / "hrf_07_h.jpg")])
    assert result.exit_code == 1
    assert "models not usable" in result.output and "appliance doctor" in result.output


def test_results_lists_what_the_worker_stored(tmp_path):
    data = str(tmp_path / "data")
    run(
        "ingest",
        str(testdata("RG1_J2KI.dcm")),
        str(FUNDUS_DIR / "hrf_12_h.jpg"),
        "--data-dir",
        data,
        "--process",
    )
    rows = json.loads(run("results", "--data-dir", data, "--json").output)
    assert {r["route"] for r in rows} == {"chest_xray", "fundus"}
    assert all(r["model_sha256"] and r["timings"]["decode"] > 0 for r in rows)
    text = run("results", "--data-dir", data).output
    assert "score" in text and "9RG1" in text
