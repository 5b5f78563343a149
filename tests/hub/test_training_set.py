"""``appliance hub training-set``: near-duplicates removed, a patient's images kept
together, the locked test split recorded once and kept as new data joins, and label
conflicts settled (outcome over review, the newest export)."""

from __future__ import annotations

import json

import pytest
from hub.trainingkit import (
    MODEL,
    SECRET_HEX,
    Box,
    Item,
    fix_secret,
    hub_cli,
    near_copy,
    read_labels,
    xray,
)

from appliance.hub.db import HubDatabase
from appliance.hub.training_split import LOCKED_TEST, TRAIN, split_by_rule
from appliance.wire.training_export import LABEL_COLUMNS


@pytest.fixture
def hub_db(tmp_path, database_url):
    database = HubDatabase(tmp_path / "hub", database_url)
    fix_secret(database)
    yield database
    database.close()


def gather(database, database_url, stick, out) -> dict:
    done = hub_cli(database.data_dir, database_url, "training", "import", str(stick), "--json")
    assert done.exit_code == 0, done.output
    done = hub_cli(
        database.data_dir, database_url, "training-set", "--model", MODEL, "--out", str(out),
        "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    return json.loads(done.output)


def split_rows(out) -> dict[str, list[dict[str, str]]]:
    return {s: read_labels(out / s / "labels.csv") for s in (TRAIN, LOCKED_TEST)}


def patients_by_split(out) -> dict[str, set[str]]:
    return {s: {r["patient_key"] for r in rows} for s, rows in split_rows(out).items()}


def test_near_duplicates_go_and_each_patient_stays_in_one_split(tmp_path, hub_db, database_url):
    box = Box()
    originals = [Item(xray(i), patient=f"P{i % 12}", label=int(i % 3 == 0)) for i in range(60)]
    # The same pictures again (same labels): one under another patient (another box's
    # id for them, say), one under its own patient — each is one picture, kept once.
    copies = [Item(near_copy(xray(4)), patient="P-other", label=originals[4].label),
              Item(near_copy(xray(7)), patient="P7", label=originals[7].label)]  # fmt: skip
    box.export(tmp_path / "stick", originals + copies)
    report = gather(hub_db, database_url, tmp_path / "stick", tmp_path / "set")

    secret = bytes.fromhex(SECRET_HEX)
    patients = {i.patient for i in [*originals, *copies]}
    expected = {p: split_by_rule(secret, box.site, box.patient_key(p)) for p in patients}
    tested = [p for p, s in expected.items() if s == LOCKED_TEST]
    # This secret puts some patients in each split, and the copy of P4's picture in the
    # locked test: there it stays, and P4's original is not trained on.
    assert 0 < len(tested) < len(expected)
    assert (expected["P-other"], expected["P4"]) == (LOCKED_TEST, TRAIN)
    train = [i for i in originals if expected[i.patient] == TRAIN and i is not originals[4]]
    test = [i for i in originals if expected[i.patient] == LOCKED_TEST] + [copies[0]]
    assert report == {
        "model": MODEL,
        "train": {"images": len(train), "positives": sum(i.label for i in train)},
        "locked_test": {"images": len(test), "positives": sum(i.label for i in test)},
        "duplicates_removed": 2,
        "label_conflicts": 0,
        "out": str(tmp_path / "set"),
    }
    assert len(train) + len(test) == 60

    rows = split_rows(tmp_path / "set")
    by_split = patients_by_split(tmp_path / "set")
    assert by_split[LOCKED_TEST] == {box.patient_key(p) for p in tested}
    assert not by_split[TRAIN] & by_split[LOCKED_TEST]
    assert box.patient_key("P4") in by_split[TRAIN]
    assert box.patient_key("P-other") in by_split[LOCKED_TEST]
    for split, split_rows_ in rows.items():
        assert list(split_rows_[0]) == [*LABEL_COLUMNS, "split"]
        assert {r["split"] for r in split_rows_} == {split}
        files = sorted(p.name for p in (tmp_path / "set" / split / "images").iterdir())
        assert files == sorted(r["file"].removeprefix("images/") for r in split_rows_)

    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["sites"] == ["Clinic A"] and manifest["duplicates_removed"] == 2
    assert manifest["dates"] == {"first": "2025-02-20", "last": "2025-02-20"}
    assert manifest["splits"][LOCKED_TEST]["patients"] == len(tested)
    assert "mod 100 < 20" in manifest["rules"]["locked_test"]["rule"]
    assert "<= 12 bits" in manifest["rules"]["near_duplicates"]

    again = hub_cli(hub_db.data_dir, database_url, "training-set", "--model", MODEL,
                    "--out", str(tmp_path / "set"))  # fmt: skip
    assert again.exit_code == 1 and "already exists and is not empty" in again.output


def test_the_locked_split_holds_when_new_data_joins(tmp_path, hub_db, database_url):
    box = Box()
    box.export(tmp_path / "march", [Item(xray(i), patient=f"P{i % 10}") for i in range(30)])
    gather(hub_db, database_url, tmp_path / "march", tmp_path / "set1")
    first = patients_by_split(tmp_path / "set1")
    first_test_files = {r["file"] for r in split_rows(tmp_path / "set1")[LOCKED_TEST]}
    assert first[LOCKED_TEST] and first[TRAIN]

    # Even were the programme secret changed (it must not be), a recorded patient's
    # split stays: it is recorded, never recomputed. New patients join by the rule.
    new_secret = "a7" * 32
    conn = hub_db.connect()
    try:
        conn.execute("UPDATE hub_meta SET value = ? WHERE key = 'training_split_secret'",
                     (new_secret,))  # fmt: skip
    finally:
        conn.close()
    later = [Item(xray(30 + i), patient=f"P{i % 10}", taken_on="2025-04-02") for i in range(20)]
    later += [Item(xray(50 + i), patient=f"Q{i}", taken_on="2025-04-03") for i in range(25)]
    box.export(tmp_path / "april", later)
    gather(hub_db, database_url, tmp_path / "april", tmp_path / "set2")
    second = patients_by_split(tmp_path / "set2")
    rows = split_rows(tmp_path / "set2")

    assert first[LOCKED_TEST] <= second[LOCKED_TEST] and first[TRAIN] <= second[TRAIN]
    assert first_test_files <= {r["file"] for r in rows[LOCKED_TEST]}
    # A test patient's new images are in the locked test too.
    april_test = [r for r in rows[LOCKED_TEST] if r["taken_on"] == "2025-04-02"]
    assert april_test and {r["patient_key"] for r in april_test} <= first[LOCKED_TEST]
    for i in range(25):
        key = box.patient_key(f"Q{i}")
        want = split_by_rule(bytes.fromhex(new_secret), box.site, key)
        assert key in second[want]
    manifest = json.loads((tmp_path / "set2" / "manifest.json").read_text())
    assert manifest["dates"] == {"first": "2025-02-20", "last": "2025-04-03"}
    assert len(manifest["exports"]) == 2


def test_a_label_conflict_keeps_the_outcome_then_the_newest(tmp_path, hub_db, database_url):
    box = Box()
    pictures = {name: xray(n) for name, n in (("A", 0), ("B", 1), ("C", 2), ("D", 3), ("E", 4))}

    def item(name, label, source):
        return Item(pictures[name], patient=f"P{name}", label=label, label_source=source)

    box.export(tmp_path / "stick", [
        item("A", 1, "review"), item("B", 1, "outcome"), item("C", 1, "outcome"),
        item("D", 0, "review"), item("E", 1, "outcome"),
    ])  # fmt: skip
    box.export(tmp_path / "stick", [  # a day later: what the clinic learnt since
        item("A", 0, "outcome"), item("B", 0, "outcome"), item("C", 0, "review"),
        item("D", 1, "review"), item("E", 1, "outcome"),
    ])  # fmt: skip
    report = gather(hub_db, database_url, tmp_path / "stick", tmp_path / "set")
    assert report["label_conflicts"] == 4  # E's two rows agree
    rows = [r for split in split_rows(tmp_path / "set").values() for r in split]
    chosen = {
        next(n for n in pictures if box.patient_key(f"P{n}") == r["patient_key"]):
        (r["label"], r["label_source"])
        for r in rows
    }  # fmt: skip
    assert chosen == {
        "A": ("0", "outcome"),  # an outcome beats a review
        "B": ("0", "outcome"),  # the newest outcome wins
        "C": ("1", "outcome"),  # a newer review does not overrule an outcome
        "D": ("1", "review"),  # reviews only: the newest
        "E": ("1", "outcome"),
    }
    assert report["train"]["images"] + report["locked_test"]["images"] == 5


def test_no_data_or_a_bad_model_name_says_so(tmp_path):
    database = HubDatabase(tmp_path / "hub")
    done = hub_cli(database.data_dir, "", "training-set", "--model", MODEL, "--out",
                   str(tmp_path / "set"))  # fmt: skip
    assert done.exit_code == 1 and f"no imported training images for {MODEL}" in done.output
    done = hub_cli(database.data_dir, "", "training-set", "--model", "../x", "--out",
                   str(tmp_path / "set"))  # fmt: skip
    assert done.exit_code == 1 and "is not a model name" in done.output
    assert not (tmp_path / "set").exists()
