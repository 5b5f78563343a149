"""A signed bundle file is verified before anything is put in place; a bad one is
refused with its reason, audited, and the running version is left alone."""

from __future__ import annotations

import json
import tarfile

import pytest
from helpers import count_rows
from lifecycle.modelkit import NAME, NEW, SHIPPED, new_version, rewrite_tar

from appliance.errors import ModelPackageError
from appliance.lifecycle.activation import listing
from appliance.lifecycle.install import install
from appliance.lifecycle.pack import pack
from appliance.store import model_versions
from appliance.wire.model_signature import key_id, new_key


def states(store, config) -> dict[tuple[str, str], str]:
    return {(r["name"], r["version"]): r["state"] for r in listing(store, config)}


def test_a_signed_file_installs_into_shadow_beside_the_active_version(
    trusting_box, signed_file, programme_key
):
    store, config = trusting_box
    done = install(store, config, signed_file)
    kid = key_id(programme_key[1])
    assert done == {"name": NAME, "version": NEW, "key_id": kid, "state": "shadow"}
    assert (config.data_dir / "models" / NAME / NEW / "model.int8.onnx").is_file()
    assert not any((config.data_dir / "models" / ".staging").iterdir())
    found = {(r["name"], r["version"]): r for r in listing(store, config)}
    assert found[(NAME, SHIPPED)]["state"] == "active"
    assert found[(NAME, SHIPPED)]["key_id"] == "bundled"
    assert found[(NAME, NEW)]["state"] == "shadow" and found[(NAME, NEW)]["key_id"] == kid
    assert found[("cxr-pneumonia", "1.2.0")]["state"] == "active"
    actions = [r[0] for r in store.conn().execute("SELECT action FROM audit_log")]
    assert "model.installed" in actions
    with pytest.raises(ModelPackageError, match="already on this box"):
        install(store, config, signed_file)


def _flip_model_byte(name, data):
    if name.endswith("model.int8.onnx"):
        data = bytearray(data)
        data[len(data) // 2] ^= 0x01
        return bytes(data)
    return data


def _edit_manifest(name, data):
    if name.endswith("manifest.json"):
        return data.replace(b'"a": 0.9', b'"a": 0.8')
    return data


def _drop_signature(name, data):
    return None if name == "signature.json" else data


def _escape(name, data):
    return data


@pytest.mark.parametrize(
    "change, reason",
    [
        (_flip_model_byte, "sha256 differs from the signed manifest"),
        (_edit_manifest, "signature does not verify"),
        (_drop_signature, "unsigned"),
    ],
    ids=["tampered-byte", "edited-manifest", "unsigned"],
)
def test_a_changed_or_unsigned_file_is_refused_audited_and_nothing_is_put_in_place(
    trusting_box, signed_file, tmp_path, change, reason
):
    store, config = trusting_box
    bad = rewrite_tar(signed_file, tmp_path / "bad.tar", change)
    with pytest.raises(ModelPackageError, match=reason):
        install(store, config, bad)
    _refused_and_intact(store, config, reason)


def _refused_and_intact(store, config, reason, recorded=True):
    assert not (config.data_dir / "models" / NAME / NEW).exists()
    row = (
        store.conn()
        .execute("SELECT * FROM audit_log WHERE action='model.refused' ORDER BY id DESC")
        .fetchone()
    )
    assert reason.split()[0] in row["detail"]
    if recorded:
        assert model_versions.row(store.conn(), NAME, NEW)["state"] == "refused"
    assert states(store, config)[(NAME, SHIPPED)] == "active"
    assert model_versions.active_row(store.conn(), NAME) is None  # nothing replaced


def test_a_file_signed_with_a_key_the_box_does_not_trust_is_refused(trusting_box, tmp_path):
    store, config = trusting_box
    other = tmp_path / "other.key"
    new_key(other)
    out = tmp_path / "other.tar.gz"
    pack(new_version(tmp_path / "b"), other, out)
    with pytest.raises(ModelPackageError, match="does not trust"):
        install(store, config, out)
    _refused_and_intact(store, config, "signed by key")


@pytest.mark.parametrize(
    "changes, reason",
    [
        (
            {
                "input": {
                    "name": "input",
                    "shape": ["batch", 3, 128, 128],
                    "dtype": "float32",
                    "layout": "NCHW",
                }
            },
            "input contract differs",
        ),
        (  # a size its own preprocessing does not make: the pipeline could not feed it
            {
                "input": {
                    "name": "input",
                    "shape": ["batch", 1, 96, 96],
                    "dtype": "float32",
                    "layout": "NCHW",
                }
            },
            "input contract differs",
        ),
        ({"requires_appliance": "99.0"}, "needs appliance 99.0"),
        ({"name": "cxr-magic"}, "not a model this box runs"),
    ],
    ids=["input-contract", "input-size", "appliance-version", "unknown-model"],
)
def test_a_bundle_that_does_not_fit_this_box_is_refused(
    trusting_box, programme_key, tmp_path, changes, reason
):
    store, config = trusting_box
    out = tmp_path / "new.tar"
    pack(new_version(tmp_path / "b", changes=changes), programme_key[0], out)
    with pytest.raises(ModelPackageError, match=reason):
        install(store, config, out)
    _refused_and_intact(store, config, reason, recorded="name" not in changes)


@pytest.mark.parametrize("keep", [0.3, 0.97])
def test_a_truncated_download_is_refused(trusting_box, signed_file, tmp_path, keep):
    store, config = trusting_box
    data = signed_file.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelPackageError, match="refused"):
        install(store, config, cut)
    assert not (config.data_dir / "models" / NAME / NEW).exists()
    assert states(store, config)[(NAME, SHIPPED)] == "active"


def test_a_member_that_leaves_the_bundle_or_is_a_link_is_refused(
    trusting_box, signed_file, tmp_path
):
    store, config = trusting_box
    bad = tmp_path / "evil.tar"
    with tarfile.open(signed_file) as tar_in, tarfile.open(bad, "w") as tar_out:
        for member in tar_in.getmembers():
            tar_out.addfile(member, tar_in.extractfile(member))
        link = tarfile.TarInfo("bundle/evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar_out.addfile(link)
    with pytest.raises(ModelPackageError, match="not a plain file"):
        install(store, config, bad)
    assert count_rows(store, "shadow_results") == 0
    assert not (config.data_dir / "models" / NAME / NEW).exists()


def test_the_packed_file_holds_the_signature_and_the_bundle_only(signed_file):
    with tarfile.open(signed_file) as tar:
        names = sorted(tar.getnames())
        signature = json.loads(tar.extractfile("signature.json").read())
    assert names == [
        "bundle/MODEL_CARD.md",
        "bundle/manifest.json",
        "bundle/model.int8.onnx",
        "signature.json",
    ]
    assert signature["format"] == "appliance-model-signature/1"


def test_a_version_at_another_input_size_its_own_preprocessing_makes_fits():
    """The pipeline prepares each version's input from its own manifest, so a version
    that reads twice the shipped size, and says so in its preprocessing, fits the box
    (and back again). A size its preprocessing does not make is still refused."""
    from helpers import bundle_dir

    from appliance.inference.bundle import load_bundle
    from appliance.lifecycle.checks import check_new_version
    from appliance.screening.models import REQUIRED

    shipped = dict(load_bundle(bundle_dir(NAME)).manifest)
    size = shipped["preprocessing"]["params"]["size"]

    def at(side: int, made: int, version: str) -> dict:
        return {
            **shipped,
            "version": version,
            "input": {**shipped["input"], "shape": ["batch", 1, side, side]},
            "preprocessing": {**shipped["preprocessing"], "params": {"size": made}},
        }

    larger = at(2 * size, 2 * size, "9.0.0")
    check_new_version(larger, shipped, REQUIRED)
    check_new_version(shipped, larger, REQUIRED)
    with pytest.raises(ModelPackageError, match=r"input contract differs .*\(input\)"):
        check_new_version(at(2 * size, size, "9.0.0"), shipped, REQUIRED)
