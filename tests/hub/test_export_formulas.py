"""The hub's CSV exports never hand a spreadsheet a formula: ids, route, model, triage,
sha256 and site names that a box (or an admin) wrote starting with ``= + - @``, a tab or
a carriage return come out with a leading apostrophe — and a stored record the CSV
cannot hold is left out and counted, never a download cut off half-way."""

from __future__ import annotations

import csv
import io
import logging

import pytest
from hub.test_exports import signed_in
from hub.test_tallies import device, store

from appliance.hub import create_app, records
from appliance.wire.csv_safe import FORMULA_STARTS, unsafe_cells

PAYLOAD = "cmd|' /C calc'!A0"


def poisoned(start: str, n: int) -> dict:
    """A result whose every text field a box chose starts with ``start``."""
    data = {
        "image": {"sha256": f"{start}{n:063x}"},
        "route": f"{start}chest_xray",
        "triage": f"{start}urgent",
        "model": {"name": f"{start}{PAYLOAD}", "version": f"{start}1.0"},
        "created_at": f"2024-05-0{1 + n % 2}T10:00:00+00:00",
    }
    return {"id": f"{start}result:{n}", "rev": 1, "kind": "result", "data": data}


@pytest.fixture
def app(tmp_path, database_url):
    app = create_app(tmp_path / "hub", database_url)
    conn = app.extensions["hub_database"].connect()
    try:
        records.set_admin(conn, "manager", "correct horse battery")
        for n, start in enumerate(FORMULA_STARTS):
            # Written as a box or an older hub stored them, before any door check.
            box = device(conn, f"{start}SUM(A1:A9){n}")
            store(conn, box, [poisoned(start, n), poisoned(start, n + 10)])
    finally:
        conn.close()
    return app


def parsed(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_no_cell_of_any_hub_export_starts_a_formula(app):
    client = signed_in(app)
    results = parsed(client.get("/export/results.csv").get_data(as_text=True))
    indicators = parsed(client.get("/export/indicators.csv").get_data(as_text=True))
    assert len(results) == 1 + 2 * len(FORMULA_STARTS)
    assert len(indicators) > len(FORMULA_STARTS)  # every site has its week(s)
    assert unsafe_cells(results) == [] and unsafe_cells(indicators) == []
    # Each poisoned value is still there, as text a person can read.
    header, *rows = results
    cells = {cell for row in rows for cell in row}
    for start in FORMULA_STARTS:
        assert f"'{start}{PAYLOAD}" in cells and f"'{start}chest_xray" in cells
        assert f"'{start}urgent" in cells and f"'{start}1.0" in cells
    assert all(row[header.index("entry_id")].startswith("'") for row in rows)
    assert all(row[header.index("image_sha256")].startswith("'") for row in rows)
    assert all(row[header.index("site")].startswith("'") for row in rows)


def test_counts_stay_numbers_and_a_plain_value_is_left_as_it_is(app):
    conn = app.extensions["hub_database"].connect()
    try:
        box = device(conn, "NORTH-01")
        plain = poisoned("", 7)
        store(conn, box, [plain])
    finally:
        conn.close()
    client = signed_in(app)
    rows = list(
        csv.DictReader(io.StringIO(client.get("/export/results.csv").get_data(as_text=True)))
    )
    north = next(r for r in rows if r["site"] == "NORTH-01")
    assert north["entry_id"] == "result:7" and north["route"] == "chest_xray"
    assert north["revision"] == "1"
    text = client.get("/export/indicators.csv?site=NORTH-01").get_data(as_text=True)
    indicator = next(csv.DictReader(io.StringIO(text)))
    assert indicator["screened"] == "1" and indicator["positivity"] == "100.0"


def test_a_badly_typed_stored_record_is_left_out_and_counted_not_a_broken_download(
    tmp_path, caplog
):
    """SQLite keeps whatever type it is given (no STRICT tables): a revision written as
    text, a blob where a name belongs. PostgreSQL's typed columns cannot hold these."""
    app = create_app(tmp_path / "hub", "")
    conn = app.extensions["hub_database"].connect()
    try:
        records.set_admin(conn, "manager", "correct horse battery")
        box = device(conn, "NORTH-01")
        store(conn, box, [poisoned("", n) for n in range(3)])
        for entry_id, revision, route in (
            ("result:1a", "=1+1", "chest_xray"),
            ("result:1b", 1, b"\x00=cmd"),
        ):
            with conn.transaction():
                conn.execute(
                    "INSERT INTO entries (device_id, entry_id, revision, kind, route, week,"
                    " payload, received_at) VALUES (?, ?, ?, 'result', ?, '2024-W18', '{}',"
                    " '2024-05-01T10:00:00+00:00')",
                    (box, entry_id, revision, route),
                )
    finally:
        conn.close()
    with caplog.at_level(logging.WARNING, logger="appliance.hub.exports"):
        answer = signed_in(app).get("/export/results.csv")
        text = answer.get_data(as_text=True)
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["entry_id"] for r in rows] == ["result:0", "result:1", "result:2"]
    assert "results.csv: 2 stored record(s) left out" in caplog.text
    assert "'result:1a'" in caplog.text and "'result:1b'" in caplog.text
