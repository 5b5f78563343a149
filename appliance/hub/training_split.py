"""The programme's locked test split: which patients are never trained on (issue 27).

A patient is the pair (site, patient key): the key is the box's salted HMAC of the
patient id, so the hub never sees the id, and a patient's images stay together. The
rule is fixed for the programme:

    bucket = first 8 bytes of HMAC-SHA256(programme secret, site + "\\n" + patient key),
             as an unsigned integer, modulo 100
    locked_test when bucket < 20 (about one patient in five), else train

The programme secret is made once, at random, and kept in the hub database
(``hub_meta``), so a backup carries it with the splits. Each patient's split is written
the first time the patient is seen (on import) and never changed: new data joins by the
same rule, and a patient in the locked test stays there even if the secret were lost.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from appliance.hub.db import Connection
from appliance.hub.records import now

SECRET_KEY = "training_split_secret"
TEST_PERCENT = 20
RULE = f"hmac-sha256(programme secret, site + newline + patient_key) mod 100 < {TEST_PERCENT}"
RULE_ID = f"hmac-sha256-mod100-lt{TEST_PERCENT}/1"
LOCKED_TEST = "locked_test"
TRAIN = "train"


def programme_secret(conn: Connection) -> bytes:
    """The programme's split secret, made on first use (call inside a transaction)."""
    conn.execute(
        "INSERT INTO hub_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (SECRET_KEY, secrets.token_hex(32)),
    )
    row = conn.one("SELECT value FROM hub_meta WHERE key = ?", (SECRET_KEY,))
    return bytes.fromhex(row["value"])


def split_by_rule(secret: bytes, site: str, patient_key: str) -> str:
    """Where the fixed rule puts a patient (see the module's docstring)."""
    digest = hmac.new(secret, f"{site}\n{patient_key}".encode(), hashlib.sha256).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    return LOCKED_TEST if bucket < TEST_PERCENT else TRAIN


def record_splits(conn: Connection, patients: Iterable[tuple[str, str]]) -> None:
    """Give each (site, patient key) not yet seen its split by the rule, for good
    (call inside the transaction that stores the patient's labels)."""
    secret = programme_secret(conn)
    stamp = now()
    conn.executemany(
        "INSERT INTO training_split (site, patient_key, split, rule, assigned_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (site, patient_key) DO NOTHING",
        [
            (site, key, split_by_rule(secret, site, key), RULE_ID, stamp)
            for site, key in sorted(set(patients))
        ],
    )


def recorded_splits(conn: Connection) -> dict[tuple[str, str], str]:
    """Every patient's recorded split: (site, patient key) -> train | locked_test."""
    rows = conn.execute("SELECT site, patient_key, split FROM training_split")
    return {(r["site"], r["patient_key"]): r["split"] for r in rows}
