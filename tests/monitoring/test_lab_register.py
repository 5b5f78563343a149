"""A lab register's CSV comes from outside: ``appliance outcomes import`` reads it
strictly and within bounds, and says what is wrong (row and column) without a
traceback — a huge field, bytes that are not UTF-8, a million rows, control characters,
a broken quote. Still all rows or none per file."""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest
from click.testing import CliRunner
from helpers import count_rows
from monitoring.cases import scored

from appliance.cli import main
from appliance.monitoring import lab_register, outcome_import, outcomes
from appliance.monitoring.lab_register import MAX_ROWS, RegisterError
from appliance.store.db import Store

HEADER = "original_name,test,notes,result,date\n"


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)  # no traceback


@pytest.fixture
def box(tmp_path):
    """A data directory with two scored images (img0.png, img1.png)."""
    data = tmp_path / "data"
    store = Store.open(data)
    scored(store, [0.8, 0.2])
    store.close()
    return data


def imported(data) -> int:
    store = Store.open(data)
    try:
        return count_rows(store, "outcomes")
    finally:
        store.close()


def import_file(box, tmp_path, content: bytes, *options: str):
    register = tmp_path / "lab.csv"
    register.write_bytes(content)
    return run("outcomes", "import", str(register), "--data-dir", str(box), *options)


def test_a_128_kb_field_is_refused_naming_its_row_and_column(box, tmp_path):
    content = (
        HEADER
        + "img0.png,xpert,,positive,2024-05-01\n"
        + f"img1.png,xpert,{'A' * 128 * 1024},negative,2024-05-01\n"
    ).encode()
    answer = import_file(box, tmp_path, content)
    assert answer.exit_code == 1
    assert "row 3, column notes: the row is longer than 16 KB" in answer.output
    assert "Traceback" not in answer.output and imported(box) == 0
    # The same in a quoted value spread over many lines (a cell with line breaks).
    broken = HEADER + 'img1.png,xpert,"' + "line\n" * 30_000 + '",negative,2024-05-01\n'
    answer = import_file(box, tmp_path, broken.encode())
    assert "row 2, column notes: the row is longer than 16 KB" in answer.output


def test_a_long_value_in_a_column_the_import_reads_is_a_row_problem(box, tmp_path):
    content = (HEADER + f"{'x' * 300}.png,xpert,,positive,2024-05-01\n").encode()
    answer = import_file(box, tmp_path, content)
    assert answer.exit_code == 1
    assert "row 2: column original_name: longer than 256 characters" in answer.output


def test_latin_1_is_refused_unless_named_and_never_becomes_a_replacement_character(box, tmp_path):
    content = (HEADER + "img0.png,Crachat examiné,,positive,01/05/2024\n").encode("latin-1")
    refused = import_file(box, tmp_path, content)
    assert refused.exit_code == 1
    assert "row 2: the file is not UTF-8 text (byte 0xE9)" in refused.output
    assert "--encoding latin-1" in refused.output and imported(box) == 0
    taken = import_file(box, tmp_path, content, "--encoding", "latin-1")
    assert taken.exit_code == 0, taken.output
    store = Store.open(box)
    try:
        [test] = [r[0] for r in store.conn().execute("SELECT test FROM outcomes")]
    finally:
        store.close()
    assert test == "Crachat examiné" and "\ufffd" not in test


@pytest.mark.parametrize(
    "encoding, message",
    [("utf-16", "not supported: save the file as CSV UTF-8"), ("klingon", "unknown encoding")],
)
def test_an_encoding_that_cannot_be_read_a_line_at_a_time_is_refused(
    box, tmp_path, encoding, message
):
    answer = import_file(box, tmp_path, HEADER.encode(), "--encoding", encoding)
    assert answer.exit_code == 1 and message in answer.output


def test_a_utf8_file_with_a_byte_order_mark_and_crlf_lines_still_imports(box, tmp_path):
    content = ("\ufeff" + HEADER + "img0.png,xpert,é,positive,2024-05-01\n").replace("\n", "\r\n")
    answer = import_file(box, tmp_path, content.encode())
    assert answer.exit_code == 0, answer.output
    assert imported(box) == 1


def test_control_characters_are_refused_naming_row_and_column(box, tmp_path):
    content = (
        HEADER
        + "img0.png,xpert,,positive,2024-05-01\n"
        + 'img1.png,"xp\x07ert",,negative,2024-05-01\n'
        + "img1.png,culture,,negative,2024-05-01\u202e\n"
        + 'img1.png,smear,"notes may\nspan lines",negative,2024-05-01\n'  # unread column
    ).encode()
    answer = import_file(box, tmp_path, content)
    assert answer.exit_code == 1
    assert "row 3: column test: contains a control character (U+0007)" in answer.output
    assert "row 4: column date: contains a control character (U+202E)" in answer.output
    assert "Nothing imported: 2 of 4 rows do not match." in answer.output
    assert imported(box) == 0


def test_a_test_name_typed_on_the_page_loses_its_control_characters():
    assert outcomes.read_test("xp\x1bert") == "xpert"
    assert outcomes.read_test("Crachat\texaminé\x00") == "Crachat examiné"


@pytest.mark.parametrize(
    "content, message",
    [
        (HEADER + 'img0.png,"xpert,,positive,2024-05-01\n', "row 2: not readable as CSV (a quote"),
        ("a,b\r1,2\r", "row 1: not readable as CSV (its lines end oddly"),
        (HEADER + "img0.png,xpert,,positive,2024-05-01\n\xc3", "row 3: the file is not UTF-8"),
    ],
)
def test_a_broken_file_is_refused_with_its_row(content, message):
    data = content.encode("latin-1") if "\xc3" in content else content.encode()
    with pytest.raises(RegisterError, match=message.replace("(", r"\(")):
        register = lab_register.RegisterFile(io.BytesIO(data))
        list(register.rows())


def test_hundreds_of_bad_rows_are_counted_and_only_the_first_ones_listed(box, tmp_path):
    content = (HEADER + "img0.png,xpert,,maybe,2024-05-01\n" * 500).encode()
    answer = import_file(box, tmp_path, content, "--json")
    assert answer.exit_code == 1
    report = json.loads(answer.output)
    assert report["rows_with_problems"] == 500 and len(report["problems"]) == 200
    text = import_file(box, tmp_path, content).output
    assert "... and 300 more rows." in text and "Nothing imported: 500 of 500 rows" in text


def test_a_million_rows_are_refused_in_bounded_memory(box, tmp_path):
    """HEAD read the whole file, then every row, into memory: 811 MB peak RSS for a
    million rows (bench: /usr/bin/time -v); now a line at a time, stopping at the cap."""
    register = tmp_path / "million.csv"
    with register.open("w") as out:
        out.write(HEADER)
        out.writelines("img0.png,xpert,,maybe,2024-05-01\n" for _ in range(1_000_000))
    store = Store.open(box)
    tracemalloc.start()
    try:
        with register.open("rb") as stream, pytest.raises(RegisterError) as refused:
            outcome_import.import_csv(store, stream, entered_by="lab", source="csv", match_days=14)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        store.close()
    assert f"more than {MAX_ROWS:,} rows: split it" in str(refused.value)
    assert peak < 10 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert imported(box) == 0
