"""``appliance training export`` (issue 27): no image leaves without consent and a label;
what leaves is pixels only, labelled, and signed so that any change is caught. Real
images screened by the committed bundles, a real store, real files."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import pydicom
import pytest
from helpers import TESTS, scaled_rg1, small_disk

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.monitoring.outcomes import add_outcome
from appliance.screening.pipeline import Screener
from appliance.store.consent import record_consent
from appliance.store.db import Store
from appliance.store.patients import set_patients
from appliance.store.reviews import add_review
from appliance.store.users import create_user, get_user
from appliance.training.export import KEY_FILE, export, select
from appliance.wire.csv_safe import unsafe_cells
from appliance.wire.training_export import (
    LABEL_COLUMNS,
    TrainingExportError,
    export_key,
    public_key_text,
)
from appliance.wire.training_verify import verify_export
from appliance.worker import Worker

CXR = TESTS / "data" / "cxr64"
PNGS = {
    "pos": "person1022_virus_1712.png",
    "neg": "NORMAL2-IM-0468-0001.png",
    "reviewed": "person1234_bacteria_3190.png",
    "bare": "NORMAL2-IM-0522-0001.png",
}
NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


@pytest.fixture
def box(tmp_path, models):
    """A box with five screened chest X-rays: four PNGs (two with a patient typed in) and
    a DICOM whose header says text is burned into its pixels."""
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    store = Store.open(config.data_dir)
    importer = Importer(store, config)
    ids = {k: importer.import_path(CXR / name, source="usb").image_id for k, name in PNGS.items()}
    dicom = tmp_path / "burned.dcm"
    ds = pydicom.dcmread(scaled_rg1(tmp_path, 0.1))
    ds.BurnedInAnnotation = "YES"
    ds.save_as(dicom)
    ids["dicom"] = importer.import_path(dicom, source="usb").image_id
    Worker(store, config, Screener(models, config), name="t").drain()
    set_patients(store, ids["pos"], (), "TB-0042", "Ana =cmd|' /C calc'!A0", {"username": "n"})
    set_patients(store, ids["neg"], (), "TB-0042", "", {"username": "n"})
    doctor = get_user(store, create_user(store, "dr.banda", "1357", "clinician"))
    for key, result in (("pos", "positive"), ("neg", "negative"), ("dicom", "positive")):
        add_outcome(store, image_id=ids[key], user=doctor, test="xpert", result=result,
                    tested_on="2026-03-01")
    add_review(store, image_id=ids["reviewed"], user=doctor, verdict="agree", reasons=[],
               note="")
    yield store, config, ids, doctor
    store.close()


def run_export(store, config, to: Path, policy: str, **options):
    return export(store, config.with_overrides(training_consent=policy), to,
                  device_id="box-7", site="Chamanculo", now=NOW, **options)


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _reviewed_sha(found: list[dict[str, str]]) -> str:
    [review] = [r for r in found if r["label_source"] == "review"]
    return review["file"].removeprefix("images/").removesuffix(".png")


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        found.append(data[at + 4 : at + 8])
        at += 12 + length
    return found


def test_never_lets_nothing_leave_and_writes_nothing(box, tmp_path):
    store, config, _ids, _ = box
    report = run_export(store, config, tmp_path / "usb", "never")
    assert report.to is None and report.images == 0
    assert report.skipped_no_consent == 5 and report.skipped_no_outcome == 0
    assert not (tmp_path / "usb").exists()
    assert config.training_consent == "never"  # the default


def test_ask_lets_only_the_studies_whose_patient_said_yes_leave(box, tmp_path):
    store, config, ids, doctor = box
    record_consent(store, ids["pos"], "yes", doctor)
    record_consent(store, ids["neg"], "yes", doctor)
    record_consent(store, ids["neg"], "no", doctor)  # a changed mind: the latest counts
    record_consent(store, ids["bare"], "yes", doctor)  # yes, but no label
    report = run_export(store, config, tmp_path / "usb", "ask")
    assert (report.images, report.skipped_no_consent, report.skipped_no_outcome) == (1, 3, 1)
    [row] = rows(report.to)
    assert row["label"] == "1" and row["label_source"] == "outcome"
    assert verify_export(report.to).manifest["consent_policy"] == "ask"


def test_always_exports_every_labelled_image_with_its_label(box, tmp_path):
    store, config, ids, _ = box
    report = run_export(store, config, tmp_path / "usb", "always")
    assert report.as_dict() | {"warnings": None} == {
        "images": 4, "labelled": 3, "weak": 1, "skipped_no_consent": 0,
        "skipped_no_outcome": 1, "skipped_unreadable": 0, "warnings": None,
        "to": str(tmp_path / "usb" / "box-7-20260304T050607Z"),
    }
    found = rows(report.to)
    assert list(found[0]) == list(LABEL_COLUMNS)
    flagged = store.conn().execute(
        "SELECT probability >= threshold FROM results WHERE image_id = ?", (ids["reviewed"],)
    ).fetchone()[0]
    xpert = "Sputum Xpert MTB/RIF"
    assert sorted((r["label"], r["label_source"], r["outcome_test"]) for r in found) == sorted(
        [
            ("0", "outcome", xpert),
            ("1", "outcome", xpert),
            ("1", "outcome", xpert),
            (str(flagged), "review", ""),  # agreeing: the label is what the box said
        ]
    )
    assert {r["site"] for r in found} == {"Chamanculo"} and {r["device"] for r in found} == {
        "box-7"
    }
    assert {r["model"] for r in found} == {"cxr-adult-abnormal"}
    assert all(r["score"].isdigit() and r["model_version"] for r in found)
    # One patient's images share a key; an image without a patient gets its own.
    keys = Counter(r["patient_key"] for r in found)  # TB-0042 twice, RG1, no patient
    assert sorted(keys.values()) == [1, 1, 2]
    assert sorted(len(k) for k in keys if not k.startswith("img-")) == [32, 32]
    assert [k for k in keys if k.startswith("img-")] == [f"img-{_reviewed_sha(found)[:16]}"]
    text = (report.to / "labels.csv").read_text(encoding="utf-8")
    assert not unsafe_cells(csv.reader(io.StringIO(text)))
    assert (report.to / "labels.csv").read_bytes().count(b"\r\n") == 5


def test_the_pngs_hold_pixels_only_and_text_in_pixels_is_warned(box, tmp_path):
    store, config, ids, _ = box
    report = run_export(store, config, tmp_path / "usb", "always")
    manifest = verify_export(report.to).manifest
    pngs = sorted((report.to / "images").iterdir())
    assert len(pngs) == 4
    for png in pngs:
        data = png.read_bytes()
        assert set(png_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND"}
        assert b"DICM" not in data and b"CompressedSamples" not in data and b"TB-0042" not in data
    everything = b"".join(p.read_bytes() for p in report.to.rglob("*") if p.is_file())
    assert b"CompressedSamples" not in everything and b"TB-0042" not in everything
    [warning] = manifest["warnings"]
    assert warning.startswith("1 images may carry burned-in text (DICOM BurnedInAnnotation YES)")
    assert report.warnings == manifest["warnings"]


def test_the_manifest_is_signed_and_any_change_is_caught(box, tmp_path):
    store, config, _ids, _ = box
    report = run_export(store, config, tmp_path / "usb", "always")
    manifest = verify_export(report.to).manifest
    key = public_key_text(export_key(store.data_dir / KEY_FILE))
    assert manifest["public_key"] == key and verify_export(report.to, known_key=key)
    assert oct(os.stat(store.data_dir / KEY_FILE).st_mode & 0o777) == "0o600"
    assert manifest["counts"] == {"images": 4, "labelled": 3, "weak": 1}
    assert manifest["export_id"] == "box-7-20260304T050607Z" and manifest["since"] is None
    assert (report.to / "manifest.json").read_text().index('"counts"') < (
        report.to / "manifest.json"
    ).read_text().index('"device_id"')  # sorted keys
    audit = store.conn().execute(
        "SELECT detail FROM audit_log WHERE action = 'training.exported'"
    ).fetchone()
    assert json.loads(audit["detail"])["images"] == 4

    def tampered(change) -> str:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(report.to, copy)
        change(copy)
        with pytest.raises(TrainingExportError) as refused:
            verify_export(copy)
        return str(refused.value)

    png = sorted((report.to / "images").iterdir())[0].name
    assert tampered(lambda d: (d / "images" / png).write_bytes(b"\x89PNG other")).startswith(
        f"images/{png}: changed"
    )
    assert tampered(lambda d: (d / "labels.csv").write_text("file,label\r\n")).startswith(
        "labels.csv: changed"
    )
    assert tampered(lambda d: (d / "images" / png).unlink()).startswith(f"images/{png}: listed")
    assert tampered(lambda d: (d / "images" / "extra.png").write_bytes(b"x")).startswith(
        "images/extra.png: not listed"
    )

    def relabel(d: Path) -> None:
        text = (d / "manifest.json").read_text()
        (d / "manifest.json").write_text(text.replace('"site": "Chamanculo"', '"site": "X"'))

    assert tampered(relabel).startswith("manifest.sig: the signature does not verify")
    with pytest.raises(TrainingExportError, match="another key than the one this device"):
        verify_export(report.to, known_key=public_key_text(export_key(tmp_path / "other.pem")))


def test_model_and_since_narrow_what_leaves(box, tmp_path):
    store, config, _ids, _ = box
    conn = store.conn()
    assert select(conn, "always", model="fundus-referable-dr").chosen == []
    assert len(select(conn, "always", model="cxr-adult-abnormal").chosen) == 4
    later = date.today().replace(year=date.today().year + 1)
    assert select(conn, "always", since=later).skipped_no_outcome == 0
    report = run_export(store, config, tmp_path / "usb", "always", since=date(2000, 1, 1),
                        model="cxr-adult-abnormal")
    manifest = verify_export(report.to).manifest
    assert (manifest["since"], manifest["model"]) == ("2000-01-01", "cxr-adult-abnormal")


def test_an_unwritable_folder_is_refused_clearly_and_leaves_nothing(box, tmp_path):
    store, config, _ids, _ = box
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainingExportError, match="cannot write to .*nothing was exported"):
        run_export(store, config, blocker / "usb", "always")
    assert blocker.read_text() == "not a folder"


def test_a_full_disk_leaves_no_half_written_export(box, tmp_path):
    store, config, _ids, _ = box
    with small_disk(tmp_path / "stick", "16k") as stick:
        with pytest.raises(TrainingExportError, match="disk at .* is full: nothing was exported"):
            run_export(store, config, stick, "always")
        assert list(stick.iterdir()) == []


def test_build_retrain_reads_a_boxs_exports_as_they_are_and_refuses_a_changed_one(box, tmp_path):
    """Issue 27's worked example hands a box's `training export --to` folder straight to
    build/retrain.py (--data, --locked-test): every export in it verified, the rows of
    the model asked for read, other models' rows skipped."""
    from build.retrain_data import RetrainError, read_examples

    store, config, ids, _ = box
    report = run_export(store, config, tmp_path / "stick", "always")
    [folder] = [p for p in (tmp_path / "stick").iterdir() if p.is_dir()]
    found = rows(folder)
    for model in {r["model"] for r in found}:
        read = read_examples(tmp_path / "stick", "train", model)
        wanted = sorted((r["file"].removeprefix("images/").removesuffix(".png"), int(r["label"]))
                        for r in found if r["model"] == model)
        assert sorted((e.sha256, e.label) for e in read) == wanted
    assert report.images == len(found)
    (folder / "labels.csv").write_text((folder / "labels.csv").read_text().replace(",1,", ",0,"))
    with pytest.raises(RetrainError, match="changed since it was exported"):
        read_examples(tmp_path / "stick", "train", found[0]["model"])
