"""One rule for every CSV the hub or the box writes (OWASP's CSV injection advice): a
cell starting with ``= + - @``, a tab or a carriage return gets a leading apostrophe;
numbers the program holds stay numbers. Checked on the rule itself and on the box's
day register, written with every text field poisoned."""

from __future__ import annotations

import csv
import io
import math

import pytest
from fuzzkit import FORMULA_PAYLOADS
from helpers import PIN, logged_in
from web.test_worklist_search import photo, result

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.monitoring import outcomes
from appliance.store import patients, users
from appliance.store.results import insert_result
from appliance.web import create_app
from appliance.web.spreadsheet import csv_response
from appliance.wire.csv_safe import (
    FORMULA_STARTS,
    UnwritableCell,
    safe_cell,
    safe_row,
    unsafe_cells,
)


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_text_starting_a_formula_is_written_as_text(start):
    assert safe_cell(f"{start}HYPERLINK(1)") == f"'{start}HYPERLINK(1)"
    assert safe_cell(start) == "'" + start


@pytest.mark.parametrize("payload", FORMULA_PAYLOADS)
def test_the_fuzz_corpus_formulas_come_out_as_text(payload):
    assert safe_cell(payload) == "'" + payload
    assert unsafe_cells([[safe_cell(payload)]]) == []


def test_plain_text_empty_cells_and_numbers_are_left_alone():
    assert safe_row(["Amina", "", None, 3, -0.5, 0, "a=b", " =x"]) == [
        "Amina", "", "", 3, -0.5, 0, "a=b", " =x",
    ]  # fmt: skip
    assert safe_cell("-0.5") == "'-0.5"  # text from outside, even when it looks numeric
    assert safe_cell(-math.inf) == "'-inf" and safe_cell(math.nan) == "nan"


@pytest.mark.parametrize("value", [b"=cmd", ["=cmd"], {"a": 1}, True, object()])
def test_a_value_that_is_not_text_or_a_number_is_refused(value):
    with pytest.raises(UnwritableCell):
        safe_cell(value)


def test_the_box_csv_helper_quotes_line_breaks_and_skips_an_unwritable_row(caplog):
    rows = [("=1+1", "\r=2+2", "a\n@b"), (b"blob", "x", "y"), ("-3", -3, "ok")]
    response = csv_response(("a", "b", "c"), rows, "test.csv")
    parsed = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert parsed == [["a", "b", "c"], ["'=1+1", "'\r=2+2", "a\n@b"], ["'-3", "-3", "ok"]]
    assert unsafe_cells(parsed) == []
    assert "test.csv: 1 row(s) left out" in caplog.text


@pytest.fixture
def poisoned_clinic(tmp_path):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    users.create_user(store, "nurse", PIN, "operator")
    doctor = users.get_user(store, users.create_user(store, "dr.banda", PIN, "clinician"))
    for n, start in enumerate(FORMULA_STARTS):
        image_id = importer.import_stream(
            io.BytesIO(photo(n)), source="usb", original_name=f"{start}IMG_{n}.PNG"
        ).image_id
        patients.set_patient(store, image_id, f"{start}P{n}", f"{start}HYPERLINK(x)", doctor)
        with store.write() as conn:  # route and triage: the box's schema allows codes only
            insert_result(conn, image_id, None, result("urgent", 90), None)
        outcomes.add_outcome(
            store,
            image_id=image_id,
            user={"username": "dr.banda"},
            test=f"{start}SUM(A1)",
            result="positive",
            tested_on="2024-05-01",
        )
    return app


def test_no_cell_of_the_box_register_starts_a_formula(poisoned_clinic):
    from appliance.store import worklist as queries

    day = queries.local_today("UTC").isoformat()
    answer = logged_in(poisoned_clinic, "nurse").get(f"/register.csv?day={day}")
    assert answer.status_code == 200
    rows = list(csv.reader(io.StringIO(answer.get_data(as_text=True).lstrip("\ufeff"))))
    assert len(rows) == 1 + len(FORMULA_STARTS)
    assert unsafe_cells(rows) == []
    header = rows[0]
    names = [row[header.index("patient_name")] for row in rows[1:]]
    # A name typed with a leading tab or line break is trimmed when it is entered.
    expected = [f"'{s}HYPERLINK(x)" for s in "=+-@"] + ["HYPERLINK(x)"] * 2
    assert sorted(names) == sorted(expected)
