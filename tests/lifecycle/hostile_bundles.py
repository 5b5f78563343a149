"""Hostile model bundle files, correctly signed: what a programme key in the wrong hands
(or a careless packer) could make. Import as ``from lifecycle.hostile_bundles import ...``.

``signed_bundle`` signs a manifest with the test programme key exactly as ``pack`` does
(``sign_manifest`` over the manifest's bytes) but writes the tar by hand, so a member
name or a manifest path can be anything. The archive bombs are for the USB scan: a
``.tar.gz`` of 400,000 empty members (a few MB), a ``.tgz`` that unpacks to 4 GiB of
zeros (4 MB: one small gzip member repeated, which gzip readers join), and a tar whose
first header announces a 1 GiB extended header.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from pathlib import Path

from lifecycle.modelkit import new_version

from appliance.wire.model_signature import load_private, sign_manifest

PLANTED = b"#!/bin/sh\necho planted\n"


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mode, info.mtime = size, kind, link, 0o644, 0
    return info


def signed_bundle(
    out: Path,
    key_path: Path,
    listed: dict[str, bytes] | None = None,
    extra: list[tuple[tarfile.TarInfo, bytes]] | None = None,
) -> Path:
    """The test's new version with ``listed`` files added to its signed manifest (each
    as a member ``bundle/<name>``, whatever the name) and ``extra`` raw members."""
    folder = new_version(out.parent / f"{out.name}.src")
    manifest = json.loads((folder / "manifest.json").read_text())
    for rel, data in (listed or {}).items():
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest()}
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    signature = json.dumps(sign_manifest(manifest_bytes, load_private(key_path))).encode()
    members = [("signature.json", signature), ("bundle/manifest.json", manifest_bytes)]
    for rel in sorted(json.loads((folder / "manifest.json").read_text())["files"]):
        members.append((f"bundle/{rel}", (folder / rel).read_bytes()))
    members += [(f"bundle/{rel}", data) for rel, data in (listed or {}).items()]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
        for info, data in extra or []:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out


def link_member(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, bytes]:
    """A symbolic link, hard link or device member."""
    return _info(name, 0, kind, target), b""


def _gzip_of_zeros(total: int, chunk: int = 64 << 20) -> list[bytes]:
    """gzip members that together unpack to ``total`` zero bytes (a few KB each)."""
    one = gzip.compress(bytes(chunk), compresslevel=9, mtime=0)
    return [one] * (total // chunk)


def many_members_tar_gz(out: Path, count: int = 400_000) -> Path:
    """A .tar.gz of ``count`` empty files (no signature, no manifest): 2.8 MB."""
    # One ustar header, its name and checksum patched per member (tobuf is slow).
    template = bytearray(_info("f/0000000.txt").tobuf(tarfile.USTAR_FORMAT))
    template[0:13] = bytes(13)
    template[148:156] = b" " * 8
    base = sum(template)
    squeeze = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip wrapper
    with open(out, "wb") as fh:
        block = []
        for i in range(count):
            name = b"f/%07d.txt" % i
            check = b"%06o\0 " % (base + sum(name))  # the field counts as 8 spaces
            block.append(name + template[13:148] + check + template[156:])
            if len(block) == 4096:
                fh.write(squeeze.compress(b"".join(block)))
                block = []
        fh.write(squeeze.compress(b"".join(block) + bytes(1024)))
        fh.write(squeeze.flush())
    return out


def zeros_bomb_tgz(out: Path, total: int = 4 << 30) -> Path:
    """A .tgz whose one member is ``total`` zero bytes: 4 MB on the stick."""
    header = _info("zeros.bin", total).tobuf(tarfile.GNU_FORMAT)
    with open(out, "wb") as fh:
        fh.write(gzip.compress(header, mtime=0))
        for part in _gzip_of_zeros(total):
            fh.write(part)
        fh.write(gzip.compress(bytes(1024), mtime=0))
    return out


def header_bomb_tar_gz(out: Path, total: int = 1 << 30) -> Path:
    """A .tar.gz whose first member is a pax extended header of ``total`` bytes (a
    reader that loads such a header whole needs ``total`` bytes of memory)."""
    header = _info("././@PaxHeader", total, tarfile.XHDTYPE).tobuf(tarfile.USTAR_FORMAT)
    with open(out, "wb") as fh:
        fh.write(gzip.compress(header, mtime=0))
        for part in _gzip_of_zeros(total):
            fh.write(part)
    return out


def hostile_cases(tmp_path):
    """name -> (listed files, extra members, the reason the refusal gives)."""
    outside = tmp_path / "outside" / "planted.sh"
    return {
        "absolute-in-manifest": ({str(outside): PLANTED}, [], "an absolute path"),
        "dotdot-in-manifest": ({"../../../planted.sh": PLANTED}, [], "leaves the bundle"),
        "dot-in-manifest": ({"./x/../../planted.sh": PLANTED}, [], "leaves the bundle"),
        "outside-bundle-folder": ({}, [link_member("run.sh", tarfile.REGTYPE, "")], "outside"),
        "absolute-member": ({}, [link_member(str(outside), tarfile.REGTYPE, "")], "absolute"),
        "symlink": ({}, [link_member("bundle/x", tarfile.SYMTYPE, "/etc/passwd")], "plain"),
        "hardlink": ({}, [link_member("bundle/x", tarfile.LNKTYPE, "/etc/passwd")], "plain"),
        "device": ({}, [link_member("bundle/x", tarfile.CHRTYPE, "")], "not a plain file"),
    }


HOSTILE_CASES = list(hostile_cases(Path("/x")))


def signed_then_header_bomb(out: Path, key_path: Path, total: int = 1 << 30) -> Path:
    """A sound signed bundle's members, then a pax header of ``total`` bytes (.tar.gz):
    the scan offers it (its first members are right); install must not load the header."""
    plain = signed_bundle(out.with_suffix(".plain"), key_path)
    with tarfile.open(plain) as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + -(-last.size // 512) * 512  # the end-of-archive blocks cut
    header = _info("././@PaxHeader", total, tarfile.XHDTYPE).tobuf(tarfile.USTAR_FORMAT)
    with open(out, "wb") as fh:
        fh.write(gzip.compress(plain.read_bytes()[:end] + header, mtime=0))
        for part in _gzip_of_zeros(total):
            fh.write(part)
    return out


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (files, folders and links), relative."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}
