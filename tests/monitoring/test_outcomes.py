"""Confirmatory outcomes: entered on the page or imported from a lab register's CSV; all
rows or none; append-only, audited, and queued for the hub in the same transaction."""

from __future__ import annotations

import json
import sqlite3

import pytest
from helpers import TESTS, count_rows, testdata

from appliance.monitoring import outcome_import, outcomes
from appliance.monitoring.outcomes import OutcomeError
from appliance.store.users import create_user, get_user

PNG = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
OTHER_PNG = TESTS / "data" / "cxr64" / "person7_bacteria_28.png"


@pytest.fixture
def images(importer) -> dict[str, int]:
    """Real files: DICOMs with patient, date and UIDs (RG1 twice: one study, two
    images), PNGs known only by their file name."""
    files = {
        "ct": testdata("CT_small.dcm"),
        "mr": testdata("MR_small.dcm"),
        "rg1": testdata("RG1_UNCR.dcm"),
        "rg1_j2k": testdata("RG1_J2KI.dcm"),
        "png": PNG,
        "other_png": OTHER_PNG,
    }
    return {k: importer.import_path(p, source="usb").image_id for k, p in files.items()}


def clinician(store) -> dict:
    return get_user(store, create_user(store, "dr.banda", "1357", "clinician"))


def test_an_outcome_is_stored_audited_queued_for_the_hub_and_never_changed(store, images):
    outcome_id = outcomes.add_outcome(
        store,
        image_id=images["png"],
        user=clinician(store),
        test="xpert",
        result="Positive",
        tested_on="2024-05-03",
    )
    [row] = outcomes.outcomes_for(store, images["png"])
    assert (row["test"], row["result"], row["positive"], row["tested_on"]) == (
        "xpert",
        "positive",
        1,
        "2024-05-03",
    )
    assert row["entered_by"] == "dr.banda" and row["source"] == "page"
    audit = (
        store.conn()
        .execute("SELECT actor, subject FROM audit_log WHERE action = 'outcome.added'")
        .fetchall()
    )
    assert [tuple(a) for a in audit] == [("dr.banda", f"image:{images['png']}")]
    [entry] = store.conn().execute("SELECT * FROM outbox WHERE kind = 'outcome'").fetchall()
    payload = json.loads(entry["payload"])
    assert entry["entry_id"].startswith("outcome:") and entry["local_id"] == outcome_id
    assert payload["positive"] is True and payload["test"] == "xpert"
    assert payload["image"] == {
        "sha256": store.conn()
        .execute("SELECT sha256 FROM images WHERE id = ?", (images["png"],))
        .fetchone()[0]
    }
    for sql in ("UPDATE outcomes SET result = 'negative'", "DELETE FROM outcomes"):
        with pytest.raises(sqlite3.DatabaseError, match="never"):
            store.conn().execute(sql)


@pytest.mark.parametrize(
    ("written", "result", "positive", "grade"),
    [
        ("positive", "positive", True, None),
        ("NEG", "negative", False, None),
        ("+", "positive", True, None),
        ("3", "grade 3", True, 3),
        ("grade 1", "grade 1", False, 1),
        ("Indeterminate", "indeterminate", None, None),
        ("withdrawn", "withdrawn", None, None),
    ],
)
def test_results_are_read_as_written_by_a_lab(written, result, positive, grade):
    assert outcomes.read_result(written) == outcomes.Reading(result, positive, grade)


@pytest.mark.parametrize("written", ["maybe", "5", "grade 7", ""])
def test_results_the_box_cannot_read_are_refused_saying_what_it_accepts(written):
    with pytest.raises(OutcomeError, match="positive, negative, a grade from 0 to 4"):
        outcomes.read_result(written)


def test_dates_are_iso_or_day_first_and_never_in_the_future():
    assert str(outcomes.read_date("03/05/2024")) == "2024-05-03"
    assert str(outcomes.read_date("20240503")) == "2024-05-03"
    with pytest.raises(OutcomeError, match="YYYY-MM-DD"):
        outcomes.read_date("May 3rd")
    with pytest.raises(OutcomeError, match="future"):
        outcomes.read_date("2999-01-01")


def import_text(store, text: str) -> outcome_import.ImportReport:
    return outcome_import.import_csv(
        store, text, entered_by="lab", source="csv:lab.csv", match_days=14
    )


def test_a_register_matches_by_uid_by_file_name_or_by_patient_and_date(store, images):
    text = (
        "sop_instance_uid,original_name,patient_id,test,result,date\n"
        "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322,,,culture,negative,2004-01-25\n"
        f",{PNG.name},,radiologist,positive,2024-05-01\n"
        ",,9RG1,xpert,positive,2004-08-30\n"  # 4 days after the study: both its images
        ",,4MR1,smear,negative,26/08/2004\n"
    )
    report = import_text(store, text)
    assert report.ok, report.problems
    assert (report.rows, report.imported, report.images, report.already) == (4, 5, 5, 0)
    found = {
        (r["image_id"], r["test"], r["result"])
        for r in store.conn().execute("SELECT image_id, test, result FROM outcomes")
    }
    assert found == {
        (images["ct"], "culture", "negative"),
        (images["png"], "radiologist", "positive"),
        (images["rg1"], "xpert", "positive"),
        (images["rg1_j2k"], "xpert", "positive"),
        (images["mr"], "smear", "negative"),
    }
    assert count_rows(store, "outbox") >= 5
    again = import_text(store, text)  # the same register once more: nothing new
    assert (again.imported, again.already) == (0, 5)
    assert count_rows(store, "outcomes") == 5


def test_every_row_that_does_not_match_is_reported_and_nothing_is_imported(store, images):
    text = (
        "original_name;patient_id;test;result;date\n"  # a French spreadsheet's export
        f"{PNG.name};;radiologist;negative;01/05/2024\n"
        "no-such-file.png;;radiologist;positive;01/05/2024\n"
        ";9RG1;xpert;positive;2004-10-30\n"  # two months after the study
        ";1CT1;xpert;maybe;2004-01-19\n"
        f"{OTHER_PNG.name};;xpert;positive;2024-13-01\n"
    )
    report = import_text(store, "\ufeff" + text)
    assert not report.ok and report.imported == 0
    assert report.problems == [
        "row 3: no image named no-such-file.png",
        "row 4: no image of patient 9RG1 within 14 days of 2004-10-30",
        "row 5: The result must be positive, negative, a grade from 0 to 4, indeterminate or "
        "withdrawn.",
        "row 6: The date must be written YYYY-MM-DD or DD/MM/YYYY (day first).",
    ]
    assert count_rows(store, "outcomes") == 0
    assert (
        store.conn().execute("SELECT COUNT(*) FROM outbox WHERE kind = 'outcome'").fetchone()[0]
        == 0
    )


def test_a_file_without_the_needed_columns_is_refused_whole(store, images):
    with pytest.raises(OutcomeError, match="columns test, result and date"):
        import_text(store, "name,test,result,date\nx,xpert,positive,2024-01-01\n")


def test_the_reference_is_each_tests_latest_result_positive_if_any_is(store, images):
    user = clinician(store)

    def add(key, test, result, day="2024-05-01"):
        outcomes.add_outcome(
            store, image_id=images[key], user=user, test=test, result=result, tested_on=day
        )

    add("png", "xpert", "negative")
    add("png", "culture", "positive")  # culture positive: TB confirmed despite Xpert
    add("ct", "xpert", "positive")
    add("ct", "xpert", "withdrawn")  # entered on the wrong patient: that result is gone
    add("mr", "radiologist", "negative")
    add("mr", "radiologist", "positive")  # corrected: the latest counts
    add("rg1", "xpert", "indeterminate")
    assert outcomes.references(store.conn()) == {images["png"]: True, images["mr"]: True}
