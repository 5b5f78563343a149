"""The one door for a training export (``appliance.wire.training_verify``): every reader
(the hub's import by USB or sync, ``build/retrain_data.py``) refuses the same faults,
naming the file. Real signed exports of real test X-rays (``hub/trainingkit.py``)."""

from __future__ import annotations

import base64
import json
import zlib

import pytest
from hub.trainingkit import Box, Item, png, xray

from appliance.wire.training_export import TrainingExportError
from appliance.wire.training_verify import verify_export


def with_text_chunk(data: bytes) -> bytes:
    """A PNG with a tEXt chunk (a name, say) before its pixels."""
    body = b"tEXt" + b"Comment\x00Jane Doe"
    chunk = len(body[4:]).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    return data[:33] + chunk + data[33:]


def resign(box: Box, folder, change) -> None:
    """Change the manifest and sign it again with the box's own key (a faulty exporter,
    not a tamperer: only the schema can catch it)."""
    manifest = json.loads((folder / "manifest.json").read_bytes())
    change(manifest)
    data = json.dumps(manifest, sort_keys=True).encode()
    (folder / "manifest.json").write_bytes(data)
    (folder / "manifest.sig").write_bytes(base64.b64encode(box.key.sign(data)))


def test_build_retrain_refuses_what_the_hub_refuses(tmp_path):
    """The retrain script once used a lighter check: a signed export with a name in a
    PNG's text chunk, or label rows of another site, went into training."""
    from build.retrain_data import RetrainError, read_examples

    stick = tmp_path / "stick"
    texted = Item(xray(0), patient="P1", data=with_text_chunk(png(xray(0))))
    Box().export(stick, [texted, Item(xray(1), patient="P2")])
    with pytest.raises(RetrainError, match=r"images/\w+\.png: carries a tEXt chunk"):
        read_examples(stick, "train", "cxr-adult-abnormal")

    other = tmp_path / "other"
    box = Box()
    folder = box.export(other, [Item(xray(2), patient="P3")])
    resign(box, folder, lambda m: m.update(site="Clinic Z"))
    with pytest.raises(RetrainError, match="labels.csv line 2: site or device differs"):
        read_examples(other, "train", "cxr-adult-abnormal")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("model"), "manifest.json: no field model"),
        (lambda m: m.update(model=5), "manifest.json: field model has the wrong type"),
        (lambda m: m.update(counts={"images": 1}), "counts must give images, labelled and weak"),
        (lambda m: m.update(export_id="dev-b-1"), "is not this device's"),
    ],
)
def test_a_signed_but_malformed_manifest_is_refused_naming_the_field(tmp_path, change, message):
    box = Box()
    folder = box.export(tmp_path / "stick", [Item(xray(3), patient="P1")])
    resign(box, folder, change)
    with pytest.raises(TrainingExportError) as refused:
        verify_export(folder)
    assert message in str(refused.value)


def test_a_file_a_sticks_os_adds_is_left_unread(tmp_path):
    folder = Box().export(tmp_path / "stick", [Item(xray(4), patient="P1")])
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    (folder / "images" / "._x.png").write_bytes(b"resource fork")
    assert verify_export(folder).export_id == folder.name
