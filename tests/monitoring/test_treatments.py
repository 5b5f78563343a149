"""Treatment started (a date and where): typed on the study page or imported with the lab
register; append-only, audited, and sent to the hub as the next revision of the outcome
it follows (an older hub keeps it as an extra field)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from helpers import PIN, csrf_from, logged_in
from monitoring.cases import scored

from appliance.config import load_config
from appliance.monitoring import outcome_import, outcomes
from appliance.monitoring.outcomes import OutcomeError
from appliance.store import outbox, users
from appliance.store.users import create_user, get_user
from appliance.web import create_app


def clinician(store) -> dict:
    return get_user(store, create_user(store, "dr.banda", PIN, "clinician"))


def hub_rows(store, image_id: int) -> list[dict]:
    rows = store.conn().execute(
        "SELECT entry_id, revision, state, payload FROM outbox"
        " WHERE destination = 'hub' AND kind = 'outcome' AND image_id = ? ORDER BY id",
        (image_id,),
    )
    return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


def test_a_treatment_start_follows_the_positive_outcome_to_the_hub(store):
    scored(store, [0.9])
    user = clinician(store)
    with pytest.raises(OutcomeError, match="confirmatory test's result first"):
        outcomes.add_treatment(
            store, image_id=1, user=user, started_on="2024-05-10", place="Clinic A"
        )
    outcomes.add_outcome(
        store, image_id=1, user=user, test="xpert", result="positive", tested_on="2024-05-03"
    )
    outcomes.add_outcome(
        store, image_id=1, user=user, test="smear", result="negative", tested_on="2024-05-04"
    )
    positive_id = store.conn().execute("SELECT id FROM outcomes WHERE test = 'xpert'").fetchone()[0]
    outcomes.add_treatment(
        store, image_id=1, user=user, started_on="10/05/2024", place="  District\x07 hospital "
    )
    [treatment] = outcomes.treatments_for(store, 1)
    assert (treatment["outcome_id"], treatment["started_on"], treatment["site"]) == (
        positive_id,
        "2024-05-10",
        "District hospital",
    )
    audit = (
        store.conn()
        .execute("SELECT actor, subject, detail FROM audit_log WHERE action = 'treatment.added'")
        .fetchone()
    )
    assert (audit["actor"], audit["subject"]) == ("dr.banda", "image:1")
    # the positive outcome's entry, again, with the treatment; the older revision superseded
    xpert = [r for r in hub_rows(store, 1) if r["payload"]["test"] == "xpert"]
    assert [(r["revision"], r["state"]) for r in xpert] == [(1, "superseded"), (2, "pending")]
    assert xpert[0]["entry_id"] == xpert[1]["entry_id"]
    assert xpert[1]["payload"]["treatment"] == {
        "started_on": "2024-05-10",
        "site": "District hospital",
        "entered_by": "dr.banda",
        "created_at": treatment["created_at"],
    }
    assert {k: v for k, v in xpert[1]["payload"].items() if k != "treatment"} == xpert[0]["payload"]
    with pytest.raises(sqlite3.DatabaseError, match="never changed"):
        with store.write() as conn:
            conn.execute("UPDATE treatments SET site = 'elsewhere'")


def test_a_treatment_start_needs_a_date_not_in_the_future_and_a_place(store):
    scored(store, [0.9])
    user = clinician(store)
    outcomes.add_outcome(
        store, image_id=1, user=user, test="xpert", result="positive", tested_on="2024-05-03"
    )
    for started_on, place, said in (
        ("2999-01-01", "Clinic A", "The treatment start date is in the future."),
        ("yesterday", "Clinic A", "The date must be written"),
        ("2024-05-10", "  ", "Say where the treatment started"),
        ("2024-05-10", "x" * 101, "Say where the treatment started"),
    ):
        with pytest.raises(OutcomeError, match=said):
            outcomes.add_treatment(store, image_id=1, user=user, started_on=started_on, place=place)
    assert outcomes.treatments_for(store, 1) == []


def test_the_lab_register_brings_treatment_starts_all_rows_or_none(store):
    names = scored(store, [0.9, 0.8, 0.7])
    register = (
        "original_name,test,result,date,treatment_started,treatment_site\n"
        f"{names[0]},xpert,positive,2024-05-01,2024-05-08,Clinic A\n"
        f"{names[1]},xpert,negative,2024-05-01,,\n"
    )
    report = outcome_import.import_csv(
        store, register, entered_by="lab", source="csv", match_days=14
    )
    assert report.ok and (report.imported, report.treatments, report.images) == (2, 1, 2)
    # a register of treatment starts only; one row's image has no test result: nothing
    later = (
        "original_name,treatment_started,treatment_site\n"
        f"{names[1]},2024-05-20,District hospital\n"
        f"{names[2]},2024-05-20,District hospital\n"
    )
    refused = outcome_import.import_csv(store, later, entered_by="lab", source="csv", match_days=14)
    assert not refused.ok and refused.problems == [
        "row 3: a treatment start for an image without a test result: add the test, result"
        " and date columns to this row"
    ]
    assert len(outcomes.treatments_for(store, 2)) == 0
    fine = outcome_import.import_csv(
        store, later.rsplit(f"{names[2]}", 1)[0], entered_by="lab", source="csv", match_days=14
    )
    assert fine.ok and fine.treatments == 1
    [started] = outcomes.treatments_for(store, 2)
    assert (started["started_on"], started["site"], started["source"]) == (
        "2024-05-20",
        "District hospital",
        "csv",
    )
    # importing the first file again changes nothing
    again = outcome_import.import_csv(
        store, register, entered_by="lab", source="csv", match_days=14
    )
    assert again.ok and (again.already, again.treatments_already, again.treatments) == (2, 1, 0)
    assert len(outcomes.treatments_for(store, 1)) == 1
    # a wrong treatment date names its row and nothing else is taken
    bad = outcome_import.import_csv(
        store,
        f"original_name,treatment_started,treatment_site\n{names[0]},2999-01-01,Clinic A\n",
        entered_by="lab",
        source="csv",
        match_days=14,
    )
    assert bad.problems == ["row 2: The treatment start date is in the future."]


def test_a_treatment_row_by_patient_is_matched_with_its_start_date(store):
    scored(store, [0.9])
    with store.write() as conn:
        conn.execute("UPDATE studies SET patient_id = 'P-7', study_date = '20240501'")
    report = outcome_import.import_csv(
        store,
        "patient_id,test,result,date\nP-7,xpert,positive,2024-05-02\n",
        entered_by="lab",
        source="csv",
        match_days=14,
    )
    assert report.ok
    late = "patient_id,treatment_started,treatment_site\nP-7,2024-06-30,Clinic A\n"
    far = outcome_import.import_csv(store, late, entered_by="lab", source="csv", match_days=14)
    assert far.problems == ["row 2: no image of patient P-7 within 14 days of 2024-06-30"]
    near = late.replace("2024-06-30", "2024-05-10")
    assert outcome_import.import_csv(store, near, entered_by="lab", source="csv", match_days=14).ok
    assert outcome_entry_has_treatment(store)


def outcome_entry_has_treatment(store) -> bool:
    pending = outbox.all_pending(store.conn())
    return any(e.kind == "outcome" and "treatment" in e.payload for e in pending)


def test_a_clinician_enters_a_treatment_start_on_the_study_page(tmp_path):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    app = create_app(config)
    store = app.extensions["appliance_store"]
    users.create_user(store, "dr", PIN, "clinician")
    users.create_user(store, "op", PIN, "operator")
    scored(store, [0.9])
    client = logged_in(app, "dr")
    page = client.get("/study/1").text
    assert "treatment-form" not in page  # no result yet: nothing to start treatment for
    token = csrf_from(page)
    client.post(
        "/study/1/outcome",
        data={
            "csrf_token": token,
            "test": "xpert",
            "result": "positive",
            "tested_on": "2024-05-03",
        },
    )
    page = client.get("/study/1").text
    assert 'class="stack treatment-form"' in page
    form = {"csrf_token": token, "started_on": "2024-05-09", "place": "Clinic A"}
    assert (
        client.post("/study/1/treatment", data={**form, "csrf_token": "forged"}).status_code == 400
    )
    operator = logged_in(app, "op")
    theirs = {**form, "csrf_token": csrf_from(operator.get("/study/1").text)}
    assert operator.post("/study/1/treatment", data=theirs).status_code == 403
    assert outcomes.treatments_for(store, 1) == []
    saved = client.post("/study/1/treatment", data=form, follow_redirects=True).text
    assert "Treatment start saved." in saved
    assert "Treatment started" in saved and "Clinic A" in saved
    [row] = outcomes.treatments_for(store, 1)
    assert (row["started_on"], row["entered_by"]) == ("2024-05-09", "dr")
    future = client.post(
        "/study/1/treatment", data={**form, "started_on": "2999-01-01"}, follow_redirects=True
    ).text
    assert "The treatment start date is in the future." in future
