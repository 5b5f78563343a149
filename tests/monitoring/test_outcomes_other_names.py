"""Issue 24, defect 13: an image that arrived twice under two names (the box kept the
first copy) is found by either name when a lab register is imported."""

from __future__ import annotations

import io

from helpers import TESTS, count_rows

from appliance.monitoring import outcome_import

PNG = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
OTHER_PNG = TESTS / "data" / "cxr64" / "person7_bacteria_28.png"


def arrive(importer, path, name: str):
    return importer.import_stream(io.BytesIO(path.read_bytes()), source="usb", original_name=name)


def import_text(store, text: str) -> outcome_import.ImportReport:
    return outcome_import.import_csv(
        store, text, entered_by="lab", source="csv:lab.csv", match_days=14
    )


def test_a_row_naming_the_second_copy_matches_the_image_kept_and_the_file_imports(
    store, importer
):
    kept = arrive(importer, PNG, "IMG_0001.png")
    again = arrive(importer, PNG, "clinic-A-0001.png")  # the same bytes, renamed
    other = arrive(importer, OTHER_PNG, "IMG_0002.png")
    assert (kept.status, again.status, again.image_id) == ("stored", "duplicate", kept.image_id)
    text = (
        "original_name,test,result,date\n"
        "clinic-A-0001.png,xpert,positive,2024-05-01\n"
        "IMG_0002.png,xpert,negative,2024-05-01\n"
    )
    report = import_text(store, text)
    assert report.ok, report.problems
    assert (report.rows, report.imported, report.images) == (2, 2, 2)
    found = {
        (r["image_id"], r["result"])
        for r in store.conn().execute("SELECT image_id, result FROM outcomes")
    }
    assert found == {(kept.image_id, "positive"), (other.image_id, "negative")}
    # The first name still works, and the same register again adds nothing.
    assert import_text(store, text.replace("clinic-A-0001.png", "IMG_0001.png")).already == 2


def test_the_same_copy_arriving_again_under_its_names_is_remembered_once(store, importer):
    kept = arrive(importer, PNG, "IMG_0001.png")
    for name in ("IMG_0001.png", "copy.png", "copy.png", ""):
        assert arrive(importer, PNG, name).status == "duplicate"
    names = store.conn().execute(
        "SELECT image_id, name FROM image_other_names"
    ).fetchall()
    assert [tuple(row) for row in names] == [(kept.image_id, "copy.png")]


def test_a_name_two_different_images_arrived_under_is_reported_not_guessed(store, importer):
    first = arrive(importer, PNG, "scan.png")
    arrive(importer, OTHER_PNG, "IMG_0002.png")
    arrive(importer, OTHER_PNG, "scan.png")  # the other image's copy, under the first's name
    report = import_text(
        store,
        "original_name,test,result,date\n"
        "scan.png,xpert,positive,2024-05-01\n"
        "IMG_0002.png,xpert,negative,2024-05-01\n",
    )
    assert report.problems == [
        "row 2: 2 images are named scan.png: give the sop_instance_uid instead"
    ]
    assert report.imported == 0 and count_rows(store, "outcomes") == 0
    assert first.status == "stored"
