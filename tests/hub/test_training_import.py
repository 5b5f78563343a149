"""``appliance hub training import``: a box's training export is checked whole (signature,
every file's sha256, the device's key on first use) and kept once; a faulty one is
refused whole, naming the file, and nothing of it is kept."""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib

import pytest
from hub.trainingkit import Box, Item, fix_secret, hub_cli, png, xray

from appliance.hub.db import HubDatabase
from appliance.hub.training import image_path, import_export
from appliance.wire.training_export import TrainingExportError

TABLES = ("training_keys", "training_exports", "training_images", "training_labels",
          "training_split")  # fmt: skip


@pytest.fixture
def hub_db(tmp_path, database_url):
    database = HubDatabase(tmp_path / "hub", database_url)
    fix_secret(database)
    yield database
    database.close()


def counts(database) -> dict[str, int]:
    conn = database.connect()
    try:
        return {t: conn.one(f"SELECT COUNT(*) AS n FROM {t}")["n"] for t in TABLES}
    finally:
        conn.close()


def stored_files(database) -> list:
    return sorted((database.data_dir / "training").rglob("*.png"))


def items(first: int, n: int, patients: int = 3) -> list[Item]:
    return [Item(xray(first + i), patient=f"P{(first + i) % patients}", label=i % 2)
            for i in range(n)]  # fmt: skip


def run_import(database, folder, database_url):
    done = hub_cli(database.data_dir, database_url, "training", "import", str(folder), "--json")
    return done.exit_code, json.loads(done.output) if done.output.startswith("{") else done


def test_a_valid_export_is_kept_and_a_second_import_adds_nothing(tmp_path, hub_db, database_url):
    box = Box()
    folder = box.export(tmp_path / "stick", items(0, 6))
    code, report = run_import(hub_db, tmp_path / "stick", database_url)
    assert code == 0, report
    assert report == {"exports": 1, "images": 6, "labels": 6, "already_imported": [],
                      "refused": []}  # fmt: skip
    assert counts(hub_db) == {"training_keys": 1, "training_exports": 1, "training_images": 6,
                              "training_labels": 6, "training_split": 3}  # fmt: skip
    # Content-addressed: each image kept once, its bytes as the box wrote them.
    for png_file in (folder / "images").iterdir():
        kept = image_path(hub_db.data_dir, png_file.stem)
        assert kept.read_bytes() == png_file.read_bytes()
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == png_file.stem
    conn = hub_db.connect()
    try:
        row = conn.one("SELECT * FROM training_labels WHERE label = 1 ORDER BY image_sha256")
        key = conn.one("SELECT * FROM training_keys")
    finally:
        conn.close()
    assert (row["model"], row["label_source"], row["site"], row["device"]) == (
        "cxr-adult-abnormal", "outcome", "Clinic A", "dev-a")  # fmt: skip
    assert key["device_id"] == "dev-a" and key["first_export_id"] == folder.name

    code, again = run_import(hub_db, folder, database_url)  # the export itself, this time
    assert code == 0
    assert again == {"exports": 0, "images": 0, "labels": 0, "already_imported": [folder.name],
                     "refused": []}  # fmt: skip
    assert counts(hub_db)["training_labels"] == 6 and len(stored_files(hub_db)) == 6


def flip_png_byte(folder):
    victim = sorted((folder / "images").iterdir())[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x10
    victim.write_bytes(bytes(data))
    return f"images/{victim.name}", "sha256 differs from the signed manifest"


def remove_png(folder):
    victim = sorted((folder / "images").iterdir())[2]
    victim.unlink()
    return f"images/{victim.name}", "missing from the export"


def edit_labels(folder):
    path = folder / "labels.csv"
    lines = path.read_bytes().split(b"\r\n")
    lines[1] = lines[1].replace(b",0,outcome,", b",1,outcome,", 1)  # a negative made positive
    path.write_bytes(b"\r\n".join(lines))
    return "labels.csv", "sha256 differs from the signed manifest"


def edit_manifest(folder):
    path = folder / "manifest.json"
    path.write_text(path.read_text().replace('"Clinic A"', '"Clinic B"'))
    return "manifest.sig", "signature does not verify"


def add_unlisted(folder):
    data = png(xray(40))
    name = hashlib.sha256(data).hexdigest() + ".png"
    (folder / "images" / name).write_bytes(data)
    return f"images/{name}", "not listed in the signed manifest"


@pytest.mark.parametrize(
    "tamper", [flip_png_byte, remove_png, edit_labels, edit_manifest, add_unlisted]
)
def test_a_tampered_or_incomplete_export_is_refused_whole(tmp_path, hub_db, database_url,
                                                          tamper):  # fmt: skip
    stick = tmp_path / "stick"
    good = Box(device_id="dev-b", site="Clinic B", salt=b"b").export(stick, items(10, 3))
    bad = Box().export(stick, items(0, 6))
    shutil.copytree(bad, tmp_path / "pristine")
    where, why = tamper(bad)
    code, report = run_import(hub_db, stick, database_url)
    assert code == 1
    assert len(report["refused"]) == 1, report
    refused = report["refused"][0]
    assert refused["export"] == bad.name
    assert refused["why"].startswith(f"{where}: ") and why in refused["why"]
    # The good export beside it is kept; nothing of the bad one is.
    assert report["exports"] == 1 and report["images"] == 3
    assert counts(hub_db)["training_images"] == 3 and len(stored_files(hub_db)) == 3
    conn = hub_db.connect()
    try:
        held = conn.execute("SELECT DISTINCT export_id FROM training_labels")
    finally:
        conn.close()
    assert held == [{"export_id": good.name}]

    # Brought again, untouched, it goes in.
    shutil.rmtree(bad)
    shutil.copytree(tmp_path / "pristine", bad)
    code, report = run_import(hub_db, bad, database_url)
    assert code == 0 and report["images"] == 6


def test_another_key_for_the_same_device_is_refused(tmp_path, hub_db, database_url):
    box = Box()
    box.export(tmp_path / "first", items(0, 3))
    assert run_import(hub_db, tmp_path / "first", database_url)[0] == 0
    impostor = Box()  # same device id and site, its own key
    impostor.exports = 5
    forged = impostor.export(tmp_path / "second", items(20, 4))
    before = counts(hub_db), stored_files(hub_db)
    code, report = run_import(hub_db, tmp_path / "second", database_url)
    assert code == 1
    assert report["refused"][0]["export"] == forged.name
    assert "signed by another key than device dev-a's" in report["refused"][0]["why"]
    assert (counts(hub_db), stored_files(hub_db)) == before
    # The real box's next export still goes in.
    box.export(tmp_path / "third", items(30, 2))
    code, report = run_import(hub_db, tmp_path / "third", database_url)
    assert code == 0 and report["exports"] == 1


def text_chunk_png(data: bytes) -> bytes:
    """``data`` with a tEXt chunk (a name, say) before its pixels."""
    body = b"tEXt" + b"Comment\x00Jane Doe"
    chunk = len(body[4:]).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    return data[:33] + chunk + data[33:]


def test_a_png_with_text_or_an_unfinished_export_is_refused(tmp_path):
    database = HubDatabase(tmp_path / "hub")
    fix_secret(database)
    item = Item(xray(0), patient="P1", data=text_chunk_png(png(xray(0))))
    folder = Box().export(tmp_path / "stick", [item])  # signed: only the pixels are wrong
    conn = database.connect()
    try:
        with pytest.raises(TrainingExportError, match=r"^images/\w+\.png: carries a tEXt chunk"):
            import_export(conn, database.data_dir, folder)
        partial = tmp_path / "stick" / ".partial-dev-a-20250309T090000Z"
        (partial / "images").mkdir(parents=True)
        with pytest.raises(TrainingExportError, match="unfinished export"):
            import_export(conn, database.data_dir, partial)
    finally:
        conn.close()
    assert counts(database)["training_images"] == 0 and stored_files(database) == []


def test_a_16_bit_png_is_kept_with_its_perceptual_hash(tmp_path):
    database = HubDatabase(tmp_path / "hub")
    fix_secret(database)
    deep = xray(5).astype("uint16") * 257
    folder = Box().export(tmp_path / "stick", [Item(deep, patient="P1"), Item(xray(5), "P2")])
    conn = database.connect()
    try:
        assert import_export(conn, database.data_dir, folder)["images"] == 2
        hashes = [r["dhash"] for r in conn.execute("SELECT dhash FROM training_images")]
    finally:
        conn.close()
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # the same picture, 8 or 16 bits
