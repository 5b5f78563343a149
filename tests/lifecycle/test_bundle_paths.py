"""A correctly signed bundle whose manifest or tar names a path outside the bundle (an
absolute one, ``..``, a member outside ``bundle/``, a link or a device) is refused by
``pack`` and ``install`` with a message naming it, before anything is written: nothing
appears anywhere on the box, not even the staging folder. The USB scan reads only the
start of a file, whatever it holds (issue 25, findings 6, 7 and 9)."""

from __future__ import annotations

import json
import resource
import tarfile
import time

import pytest
from lifecycle.hostile_bundles import (
    HOSTILE_CASES,
    header_bomb_tar_gz,
    hostile_cases,
    link_member,
    many_members_tar_gz,
    signed_bundle,
    signed_then_header_bomb,
    tree,
    zeros_bomb_tgz,
)
from lifecycle.modelkit import NAME, NEW, new_version

from appliance.errors import ModelPackageError
from appliance.lifecycle.bundle_files import find_bundle_files
from appliance.lifecycle.install import install
from appliance.lifecycle.pack import pack
from appliance.store import model_versions
from appliance.wire.model_signature import signed_parts

DB_FILES = {"appliance.db", "appliance.db-wal", "appliance.db-shm"}


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_a_signed_bundle_naming_a_path_outside_it_is_refused_and_writes_nothing(
    trusting_box, programme_key, tmp_path, case
):
    store, config = trusting_box
    listed, extra, reason = hostile_cases(tmp_path)[case]
    bad = signed_bundle(tmp_path / "hostile.tar", programme_key[0], listed, extra)
    before = {p for p in tree(tmp_path) if p.rsplit("/", 1)[-1] not in DB_FILES}
    with pytest.raises(ModelPackageError) as refused:
        install(store, config, bad)
    after = {p for p in tree(tmp_path) if p.rsplit("/", 1)[-1] not in DB_FILES}
    assert after == before  # nothing anywhere: not the planted file, not even staging
    assert not (tmp_path / "outside").exists()
    assert not (config.data_dir / "models" / ".staging").exists()
    assert str(refused.value).startswith("hostile.tar refused: ")
    assert reason in str(refused.value)
    audit = store.conn().execute("SELECT detail FROM audit_log WHERE action='model.refused'")
    assert reason in audit.fetchone()[0]
    assert model_versions.active_row(store.conn(), NAME) is None  # nothing replaced


def test_the_same_file_without_the_odd_path_installs(trusting_box, programme_key, tmp_path):
    """The hand-made signed tar is a sound bundle file apart from what a case adds."""
    store, config = trusting_box
    good = signed_bundle(tmp_path / "good.tar", programme_key[0])
    assert install(store, config, good)["state"] == "shadow"


@pytest.mark.parametrize(
    "rel, reason",
    [
        ("/etc/cron.d/planted", "an absolute path"),
        ("../planted.sh", "leaves the bundle"),
        ("sub//planted.sh", "leaves the bundle"),
        ("a\\..\\planted.sh", "backslash"),
    ],
)
def test_pack_refuses_a_manifest_listing_a_path_outside_the_bundle(
    programme_key, tmp_path, rel, reason
):
    folder = new_version(tmp_path / "built")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][rel] = {"sha256": "0" * 64}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out.tar"
    with pytest.raises(ModelPackageError, match=reason):
        pack(folder, programme_key[0], out)
    assert not out.exists() and not (tmp_path / "out.tar.tmp").exists()


def test_pack_refuses_a_listed_file_that_is_a_link(programme_key, tmp_path):
    folder = new_version(tmp_path / "built")
    card = folder / "MODEL_CARD.md"
    elsewhere = tmp_path / "elsewhere.md"
    elsewhere.write_bytes(card.read_bytes())
    card.unlink()
    card.symlink_to(elsewhere)
    with pytest.raises(ModelPackageError, match="a link"):
        pack(folder, programme_key[0], tmp_path / "out.tar")


def test_a_packed_file_passes_the_check_pack_publish_and_install_share(signed_file):
    from appliance.wire.bundle_paths import check_bundle

    manifest_bytes, _signature = signed_parts(signed_file)
    with tarfile.open(signed_file) as tar:
        assert sorted(check_bundle(tar, json.loads(manifest_bytes))) == sorted(tar.getnames())


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    return [
        many_members_tar_gz(folder / "members.tar.gz"),
        zeros_bomb_tgz(folder / "zeros.tgz"),
        header_bomb_tar_gz(folder / "header.tar.gz"),
    ]


def test_reading_a_files_signature_stops_early_whatever_the_archive_holds(bombs):
    """400,000 members, 4 GiB of zeros, a 1 GiB header: each read in milliseconds and a
    few MB (before: 14 s and +175 MB, 5 s, and 1 GiB of memory)."""
    for bomb in bombs:
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.monotonic()
        with pytest.raises(ModelPackageError):
            signed_parts(bomb)
        took = time.monotonic() - start
        grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
        assert took < 0.5, f"{bomb.name}: {took:.2f} s"
        assert grew_mb < 20, f"{bomb.name}: peak memory +{grew_mb:.0f} MB"


def test_a_stick_of_bombs_offers_only_the_signed_bundle(bombs, signed_file, tmp_path):
    stick = tmp_path / "STICK"
    stick.mkdir()
    for bomb in bombs:
        (stick / bomb.name).write_bytes(bomb.read_bytes())
    (stick / signed_file.name).write_bytes(signed_file.read_bytes())
    start = time.monotonic()
    assert find_bundle_files(stick) == [stick / signed_file.name]
    assert time.monotonic() - start < 1


def test_a_member_count_beyond_any_bundle_is_refused_by_install_without_reading_on(
    trusting_box, programme_key, tmp_path
):
    """Signed, then 400 more members: refused at the 257th, the rest never read."""
    store, config = trusting_box
    extra = [link_member(f"bundle/f{i}", tarfile.REGTYPE, "") for i in range(400)]
    bad = signed_bundle(tmp_path / "crowded.tar", programme_key[0], {}, extra)
    with pytest.raises(ModelPackageError, match="more than 256 members"):
        install(store, config, bad)
    assert not (config.data_dir / "models" / NAME / NEW).exists()


def test_a_signed_file_followed_by_a_huge_tar_header_is_refused_without_loading_it(
    trusting_box, programme_key, tmp_path
):
    """The scan offers it (its first members are right); install refuses it at the
    header, reading a few MB rather than the 1 GiB the header claims."""
    store, config = trusting_box
    bomb = signed_then_header_bomb(tmp_path / "late-bomb.tar.gz", programme_key[0])
    assert find_bundle_files(tmp_path) == [bomb]
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(ModelPackageError, match="header larger than any model bundle"):
        install(store, config, bomb)
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert time.monotonic() - start < 2 and grew_mb < 50, grew_mb
    assert not (config.data_dir / "models" / ".staging").exists()
