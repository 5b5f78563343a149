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
    # A photo without a patient is told apart by its file name.
    assert "file:eye.jpg" in text and "  IM0001" in text


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
    "population",
    "population_source",
    "needs_population",
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
    # RG1's patient was born in 1940: the adult model, by the age the file gives.
    assert chest["model"]["name"] == "cxr-adult-abnormal" and chest["backend"] == "onnxruntime"
    assert (chest["population"], chest["population_source"]) == ("adult", "dicom_age")
    # the finding named as the SR, FHIR and the hub name it (issue 23)
    assert chest["finding"] == "TB-consistent findings"
    assert chest["flagged"] is (chest["probability"] >= chest["threshold"])
    assert fundus["finding"] == "Referable diabetic retinopathy"
    assert ct["finding"] is None and ct["flagged"] is None
    assert fundus["population"] is None and not fundus["needs_population"]
    assert fundus["model"]["name"] == "fundus-referable-dr"
    assert "CT scan" in ct["reason"] and ct["score"] is None
    assert letter["reason"] == "This is a PDF document, not an image."
    assert not (tmp_path / "none").exists()  # nothing stored, no data dir made


PNG_CHEST = Path(__file__).resolve().parents[1] / "data" / "cxr64" / "IM-0135-0001.png"


def test_screen_population_flag_decides_for_a_png_never_for_a_dicom_with_an_age(tmp_path):
    files = [str(PNG_CHEST), str(testdata("RG1_J2KI.dcm"))]
    none = str(tmp_path / "none")
    result = run("screen", *files, "--population", "child", "--json", "--data-dir", none)
    assert result.exit_code == 0, result.output
    png, dicom = [json.loads(line) for line in result.output.splitlines() if line[:1] == "{"]
    assert png["model"]["name"] == "cxr-pneumonia"
    assert (png["population"], png["population_source"]) == ("child", "cli")
    assert dicom["model"]["name"] == "cxr-adult-abnormal"  # born 1940: its age wins
    assert (dicom["population"], dicom["population_source"]) == ("adult", "dicom_age")
    text = run("screen", str(PNG_CHEST), "--population", "child", "--data-dir", none).output
    assert "child, cxr-pneumonia" in text and "decision support" in text
    assert "--population" in run("screen", "--help").output
    assert run("screen", str(PNG_CHEST), "--population", "teen", "--data-dir", none).exit_code == 2


def test_screen_without_the_flag_follows_the_data_dirs_setting_and_never_guesses(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.toml").write_text('chest_population = "ask"\n')
    result = run("screen", str(PNG_CHEST), "--data-dir", str(data), "--json")
    assert result.exit_code == 0, result.output
    waiting = json.loads(result.output.splitlines()[-1])
    assert waiting["route"] == "chest_xray" and waiting["needs_population"] is True
    assert waiting["score"] is None and waiting["model"] is None
    assert "--population adult" in waiting["reason"]
    text = run("screen", str(PNG_CHEST), "--data-dir", str(data)).output
    assert "NOT SCREENED - Adult or child?" in text
    (data / "config.toml").write_text('chest_population = "child"\n')
    child = json.loads(
        run("screen", str(PNG_CHEST), "--data-dir", str(data), "--json").output.splitlines()[-1]
    )
    assert child["model"]["name"] == "cxr-pneumonia"
    assert child["population_source"] == "site_setting"


def test_an_ingested_x_ray_without_an_age_waits_where_the_site_asks(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.toml").write_text('chest_population = "ask"\n')
    assert run("ingest", str(PNG_CHEST), "--data-dir", str(data), "--process").exit_code == 0
    assert json.loads(run("results", "--data-dir", str(data), "--json").output) == []
    [study] = json.loads(run("studies", "--data-dir", str(data), "--json").output)
    assert study["images"][0]["waiting_for"] == "population"
    text = run("studies", "--data-dir", str(data)).output
    assert "(adult or child? choose on its page)" in text


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
    by_route = {r["route"]: r for r in rows}
    chest = by_route["chest_xray"]
    assert chest["model_name"] == "cxr-adult-abnormal" and chest["model_version"]
    assert chest["finding"] == "TB-consistent findings" and isinstance(chest["flagged"], bool)
    assert (chest["population"], chest["population_source"]) == ("adult", "dicom_age")
    assert by_route["fundus"]["population"] is None
    assert all(r["model_sha256"] and r["timings"]["decode"] > 0 for r in rows)
    text = run("results", "--data-dir", data).output
    assert "score" in text and "9RG1" in text
    assert "cxr-adult-abnormal" in text and "(adult)" in text
    assert "file:hrf_12_h.jpg" in text  # no patient: the original file name


def test_volumes_says_when_there_is_none(tmp_path):
    empty = tmp_path / "media"
    empty.mkdir()
    result = CliRunner().invoke(
        main,
        ["volumes", "--data-dir", str(tmp_path / "data")],
        env={"APPLIANCE_USB_ROOTS": str(empty)},
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    assert result.output.startswith("no removable volumes (looked under ")
    as_json = CliRunner().invoke(
        main,
        ["volumes", "--data-dir", str(tmp_path / "data"), "--json"],
        env={"APPLIANCE_USB_ROOTS": str(empty)},
    )
    assert json.loads(as_json.output) == []
