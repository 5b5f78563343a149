"""The hub's schema, versioned: one list of migrations for SQLite and PostgreSQL alike.

As sqlite-utils' ``Migrations``: each migration has a number and is applied once, in
order, inside one transaction with the others pending, and recorded in
``schema_migrations``; an applied migration is never edited — a change is a new one.
``appliance hub migrate`` applies what is pending (idempotent), and so does every start
of the hub (``create_app``), as it always has. A database already at a *newer* version
than this code knows is refused: an older hub must not write to it.

The SQL is the dialect both understand (``CREATE ... IF NOT EXISTS``, ``ON CONFLICT``).
On PostgreSQL an advisory lock makes several workers starting at once take turns; on
SQLite ``BEGIN IMMEDIATE`` does the same.

Why this is long: it is the hub schema's whole history, one list read in order, and a
shipped migration is never edited or moved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.errors import HubDatabaseError

if TYPE_CHECKING:
    from appliance.hub.db import Connection

# The schema as hubs created it before migrations were numbered (every statement is
# IF NOT EXISTS, so applying it to such a hub's database changes nothing).
INITIAL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS hub_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS devices (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        enrolled_at TEXT NOT NULL,
        revoked_at TEXT,
        last_seen_at TEXT,
        software TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS enrol_codes (
        code_hash TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        device_id TEXT
    )""",
    # One row per (device, entry id): the highest revision received wins.
    """CREATE TABLE IF NOT EXISTS entries (
        device_id TEXT NOT NULL REFERENCES devices(id),
        entry_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        kind TEXT NOT NULL,
        image_sha256 TEXT,
        route TEXT,
        triage TEXT,
        model_name TEXT,
        model_version TEXT,
        week TEXT,
        payload TEXT NOT NULL,
        received_at TEXT NOT NULL,
        PRIMARY KEY (device_id, entry_id)
    )""",
    "CREATE INDEX IF NOT EXISTS entries_kind_week ON entries(kind, week)",
    "CREATE INDEX IF NOT EXISTS entries_image ON entries(device_id, image_sha256)",
    """CREATE TABLE IF NOT EXISTS images (
        device_id TEXT NOT NULL REFERENCES devices(id),
        sha256 TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        stored_path TEXT NOT NULL,
        completed_at TEXT NOT NULL,
        PRIMARY KEY (device_id, sha256)
    )""",
    # Superseded by bundle_imports (a bundle id is one box's, not the hub's: another box
    # must not be able to take it); kept so an older hub's rows carry over.
    """CREATE TABLE IF NOT EXISTS imports (
        bundle_id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices(id),
        entries INTEGER NOT NULL,
        imported_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS bundle_imports (
        device_id TEXT NOT NULL REFERENCES devices(id),
        bundle_id TEXT NOT NULL,
        entries INTEGER NOT NULL,
        imported_at TEXT NOT NULL,
        PRIMARY KEY (device_id, bundle_id)
    )""",
    """INSERT INTO bundle_imports (device_id, bundle_id, entries, imported_at)
        SELECT device_id, bundle_id, entries, imported_at FROM imports WHERE true
        ON CONFLICT (device_id, bundle_id) DO NOTHING""",
    """CREATE TABLE IF NOT EXISTS admins (
        username TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    # Dashboard logins (appliance.logins.sessions) and failed-login counters
    # (appliance.logins.throttle): the same tables as on the box.
    """CREATE TABLE IF NOT EXISTS sessions (
        id_hash TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS sessions_subject ON sessions(subject)",
    """CREATE TABLE IF NOT EXISTS login_throttle (
        key TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        blocked_until DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS login_throttle_updated ON login_throttle(updated_at)",
    "INSERT INTO hub_meta (key, value) VALUES ('schema', '1') ON CONFLICT (key) DO NOTHING",
)


# Counts per device and ISO week, and results per device and model, kept in the same
# transaction as the entries (records.store_entries): the dashboard, the programme view
# and the DHIS2 export read these rows (26,000 for 500 boxes' year), never the million
# entries. week '' stands for "unknown" so the key has no NULL.
TALLY_COUNTERS = ("results", "refused", "positive", "referred", "reviews", "outcomes", "pending")
# Counting the tallies again from the entries (migration 2; bench/hub_dashboard.py).
TALLY_REBUILD: tuple[str, ...] = (
    "DELETE FROM tallies",
    "DELETE FROM model_tallies",
    # What the entries already held (a hub upgraded in place), counted once.
    """INSERT INTO tallies (device_id, week, results, refused, positive, referred, reviews,
        outcomes, pending)
    SELECT device_id, COALESCE(week, ''),
        SUM(CASE WHEN kind = 'result' THEN 1 ELSE 0 END),
        SUM(CASE WHEN kind = 'result' AND route = 'refused' THEN 1 ELSE 0 END),
        SUM(CASE WHEN kind = 'result' AND triage IN ('urgent', 'review') THEN 1 ELSE 0 END),
        SUM(CASE WHEN kind = 'result' AND triage = 'urgent' THEN 1 ELSE 0 END),
        SUM(CASE WHEN kind = 'review' THEN 1 ELSE 0 END),
        SUM(CASE WHEN kind = 'outcome' THEN 1 ELSE 0 END),
        0
    FROM entries WHERE kind IN ('result', 'review', 'outcome')
    GROUP BY 1, 2""",
    # A review is pending for an image with a positive result and no review yet; it is
    # counted in the week of the image's first positive result.
    """INSERT INTO tallies (device_id, week, pending)
    SELECT device_id, week, n FROM (
        SELECT device_id, week, COUNT(*) AS n FROM (
            SELECT r.device_id, COALESCE(MIN(r.week), '') AS week FROM entries r
            WHERE r.kind = 'result' AND r.triage IN ('urgent', 'review')
            AND r.image_sha256 IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM entries v WHERE v.device_id = r.device_id
                AND v.kind = 'review' AND v.image_sha256 = r.image_sha256)
            GROUP BY r.device_id, r.image_sha256
        ) AS images GROUP BY device_id, week
    ) AS counted WHERE true
    ON CONFLICT (device_id, week) DO UPDATE SET pending = tallies.pending + excluded.pending""",
    """INSERT INTO model_tallies (device_id, model_name, model_version, results, last_received)
    SELECT device_id, model_name, COALESCE(model_version, ''), COUNT(*), MAX(received_at)
    FROM entries WHERE kind = 'result' AND model_name IS NOT NULL
    GROUP BY 1, 2, 3""",
)
TALLIES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS tallies (
        device_id TEXT NOT NULL REFERENCES devices(id),
        week TEXT NOT NULL,
        results BIGINT NOT NULL DEFAULT 0,
        refused BIGINT NOT NULL DEFAULT 0,
        positive BIGINT NOT NULL DEFAULT 0,
        referred BIGINT NOT NULL DEFAULT 0,
        reviews BIGINT NOT NULL DEFAULT 0,
        outcomes BIGINT NOT NULL DEFAULT 0,
        pending BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (device_id, week)
    )""",
    "CREATE INDEX IF NOT EXISTS tallies_week ON tallies(week)",
    """CREATE TABLE IF NOT EXISTS model_tallies (
        device_id TEXT NOT NULL REFERENCES devices(id),
        model_name TEXT NOT NULL,
        model_version TEXT NOT NULL,
        results BIGINT NOT NULL DEFAULT 0,
        last_received TEXT,
        PRIMARY KEY (device_id, model_name, model_version)
    )""",
    "CREATE INDEX IF NOT EXISTS devices_site ON devices(site)",
    # CSV export of one site (its devices) for a period, in entry order.
    "CREATE INDEX IF NOT EXISTS entries_device_kind_week ON entries(device_id, kind, week)",
    *TALLY_REBUILD,
)

# Model distribution (hub/distribution.py) and what a FHIR server holds (hub/fhir/push.py):
# written before migrations were numbered, so a hub that already has them keeps them.
DISTRIBUTION_AND_FHIR: tuple[str, ...] = (
    # The programme keys the hub checks a bundle file with before publishing it, the
    # published files, which boxes get which (a device, a site or everyone; activate 0/1),
    # and what each box reports it runs.
    """CREATE TABLE IF NOT EXISTS model_keys (
        key_id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        trusted_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS model_bundles (
        sha256 TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        key_id TEXT NOT NULL,
        stored_path TEXT NOT NULL,
        published_at TEXT NOT NULL,
        UNIQUE (name, version)
    )""",
    """CREATE TABLE IF NOT EXISTS rollouts (
        sha256 TEXT NOT NULL REFERENCES model_bundles(sha256),
        target TEXT NOT NULL,
        activate INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (sha256, target)
    )""",
    """CREATE TABLE IF NOT EXISTS device_models (
        device_id TEXT NOT NULL REFERENCES devices(id),
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL,
        reported_at TEXT NOT NULL,
        PRIMARY KEY (device_id, name, version)
    )""",
    # What the FHIR server holds of each report (appliance/hub/fhir/push.py).
    """CREATE TABLE IF NOT EXISTS fhir_pushed (
        device_id TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        digest TEXT NOT NULL,
        pushed_at TEXT NOT NULL,
        PRIMARY KEY (device_id, entry_id)
    )""",
)


# FHIR search and push at a million results (hub/fhir/search.py): the patient and the
# result's day as columns (the payload's ``image.patient_id`` and ``created_at[:10]``,
# filled by ``records._row`` from now on, from the payloads here), indexed, and an index
# in arrival order for "newest first" and for what arrived since the last push. The day
# compares byte by byte (COLLATE "C" on PostgreSQL; SQLite's default) whatever the
# database's locale, as the search's prefixes assume.
FHIR_COLUMNS_BY_BACKEND: dict[str, tuple[str, ...]] = {
    "postgresql": (
        'ALTER TABLE entries ADD COLUMN patient_id TEXT, ADD COLUMN result_day TEXT COLLATE "C"',
        """UPDATE entries SET
            patient_id = NULLIF(payload::jsonb -> 'image' ->> 'patient_id', ''),
            result_day = substr(payload::jsonb ->> 'created_at', 1, 10)
        WHERE kind = 'result'""",
    ),
    "sqlite": (
        "ALTER TABLE entries ADD COLUMN patient_id TEXT",
        "ALTER TABLE entries ADD COLUMN result_day TEXT",
        """UPDATE entries SET
            patient_id = NULLIF(CAST(json_extract(payload, '$.image.patient_id') AS TEXT), ''),
            result_day = substr(json_extract(payload, '$.created_at'), 1, 10)
        WHERE kind = 'result' AND json_valid(payload)""",
    ),
}
FHIR_INDEXES: tuple[str, ...] = (
    "CREATE INDEX IF NOT EXISTS entries_result_patient ON entries(patient_id, received_at)"
    " WHERE kind = 'result'",
    "CREATE INDEX IF NOT EXISTS entries_result_day ON entries(result_day) WHERE kind = 'result'",
    "CREATE INDEX IF NOT EXISTS entries_received ON entries(received_at, device_id, entry_id)",
)


# Records a reader could not render (hub/bad_records.py): noted by the reader that
# skipped one (FHIR, the pusher, the dashboard) or by a check of a box's records, for the
# admin to see; records the admin quarantined, moved out of ``entries`` whole (so no
# reader, push, tally or export sees them) and kept for audit until released; and the
# admin's actions on them.
BAD_RECORDS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS bad_records (
        device_id TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        reader TEXT NOT NULL,
        reason TEXT NOT NULL,
        first_seen_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL,
        PRIMARY KEY (device_id, entry_id)
    )""",
    """CREATE TABLE IF NOT EXISTS quarantined_entries (
        device_id TEXT NOT NULL REFERENCES devices(id),
        entry_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        kind TEXT NOT NULL,
        image_sha256 TEXT,
        route TEXT,
        triage TEXT,
        model_name TEXT,
        model_version TEXT,
        week TEXT,
        payload TEXT NOT NULL,
        received_at TEXT NOT NULL,
        patient_id TEXT,
        result_day TEXT,
        reason TEXT NOT NULL,
        quarantined_by TEXT NOT NULL,
        quarantined_at TEXT NOT NULL,
        PRIMARY KEY (device_id, entry_id)
    )""",
    """CREATE TABLE IF NOT EXISTS admin_actions (
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        device_id TEXT,
        entry_id TEXT,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS admin_actions_device ON admin_actions(device_id, at)",
)


# Training exports gathered at the hub (issue 27; hub/training.py, hub/training_set.py):
# each box's export key as first seen (trust on first use), the exports imported, their
# images (content-addressed, with a perceptual hash for near-duplicates) and label rows,
# and the locked test split: one row per patient (site + the box's salted patient key),
# written the first time the patient is seen and never changed.
TRAINING: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS training_keys (
        device_id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        site TEXT NOT NULL,
        first_export_id TEXT NOT NULL,
        trusted_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS training_exports (
        export_id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES training_keys(device_id),
        site TEXT NOT NULL,
        created_at TEXT NOT NULL,
        model TEXT,
        consent_policy TEXT NOT NULL,
        manifest_sha256 TEXT NOT NULL,
        images INTEGER NOT NULL,
        labels INTEGER NOT NULL,
        warnings TEXT NOT NULL,
        imported_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS training_images (
        sha256 TEXT PRIMARY KEY,
        stored_path TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        dhash TEXT NOT NULL,
        first_export_id TEXT NOT NULL,
        stored_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS training_labels (
        export_id TEXT NOT NULL REFERENCES training_exports(export_id),
        image_sha256 TEXT NOT NULL REFERENCES training_images(sha256),
        model TEXT NOT NULL,
        label INTEGER NOT NULL,
        label_source TEXT NOT NULL,
        outcome_test TEXT NOT NULL,
        population TEXT NOT NULL,
        laterality TEXT NOT NULL,
        score TEXT NOT NULL,
        model_version TEXT NOT NULL,
        patient_key TEXT NOT NULL,
        site TEXT NOT NULL,
        device TEXT NOT NULL,
        taken_on TEXT NOT NULL,
        PRIMARY KEY (export_id, image_sha256, model)
    )""",
    "CREATE INDEX IF NOT EXISTS training_labels_model ON training_labels(model, image_sha256)",
    """CREATE TABLE IF NOT EXISTS training_split (
        site TEXT NOT NULL,
        patient_key TEXT NOT NULL,
        split TEXT NOT NULL,
        rule TEXT NOT NULL,
        assigned_at TEXT NOT NULL,
        PRIMARY KEY (site, patient_key)
    )""",
)


# The web first run and admin pages (hub/admin.py): who made each dashboard login and
# issued each enrolment code (NULL: the command line, or before this migration). What
# they did is in admin_actions (migration 5).
ADMIN_PAGES: tuple[str, ...] = (
    "ALTER TABLE admins ADD COLUMN created_by TEXT",
    "ALTER TABLE enrol_codes ADD COLUMN created_by TEXT",
    "CREATE INDEX IF NOT EXISTS enrol_codes_created ON enrol_codes(created_at)",
)


# Results, refusals and positives per device, ISO week and programme (chest, retina,
# other: a refusal before routing), kept on write like the tallies (records.store_entries,
# bad_records' quarantine): the programme pages split chest from retina per week from
# these rows (500 boxes x 12 weeks x 3), never from the entries. The programme of a
# result is its route, else (a refusal) the model it names: as tallies.programme_of.
PROGRAMME_OF_ENTRY = (
    "CASE WHEN route = 'chest_xray' OR SUBSTR(model_name, 1, 4) = 'cxr-' THEN 'chest'"
    " WHEN route = 'fundus' OR SUBSTR(model_name, 1, 7) = 'fundus-' THEN 'retina'"
    " ELSE 'other' END"
)
# Counting them again from the entries (migration 8; bench/hub_dashboard.py).
PROGRAMME_TALLY_REBUILD: tuple[str, ...] = (
    "DELETE FROM programme_tallies",
    f"""INSERT INTO programme_tallies (device_id, week, programme, results, refused, positive)
    SELECT device_id, COALESCE(week, ''), {PROGRAMME_OF_ENTRY}, COUNT(*),
        SUM(CASE WHEN route = 'refused' THEN 1 ELSE 0 END),
        SUM(CASE WHEN triage IN ('urgent', 'review') THEN 1 ELSE 0 END)
    FROM entries WHERE kind = 'result'
    GROUP BY device_id, COALESCE(week, ''), {PROGRAMME_OF_ENTRY}""",
)
PROGRAMME_TALLIES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS programme_tallies (
        device_id TEXT NOT NULL REFERENCES devices(id),
        week TEXT NOT NULL,
        programme TEXT NOT NULL,
        results BIGINT NOT NULL DEFAULT 0,
        refused BIGINT NOT NULL DEFAULT 0,
        positive BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (device_id, week, programme)
    )""",
    "CREATE INDEX IF NOT EXISTS programme_tallies_week ON programme_tallies(week)",
    *PROGRAMME_TALLY_REBUILD,
)


# Each confirmatory outcome read once as it arrives, one row per patient of its image
# (the box's results for it: route and patient; '' while none), kept on write like the
# tallies (hub/cascade_outcomes.py): the care cascade counts tested, confirmed and
# treated from these columns instead of parsing every outcome's payload per page. The outcomes the
# entries already hold are read by ``_read_outcomes`` (Python: the same reading as on
# write, on both databases).
CASCADE_OUTCOMES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS cascade_outcomes (
        device_id TEXT NOT NULL REFERENCES devices(id),
        entry_id TEXT NOT NULL,
        route TEXT NOT NULL,
        patient TEXT NOT NULL,
        image_sha256 TEXT,
        readable INTEGER NOT NULL,
        test TEXT,
        withdrawn INTEGER NOT NULL,
        positive INTEGER NOT NULL,
        tested_on TEXT,
        treated_on TEXT,
        created_at TEXT NOT NULL,
        local_id BIGINT NOT NULL,
        PRIMARY KEY (device_id, entry_id, route, patient)
    )""",
    "CREATE INDEX IF NOT EXISTS cascade_outcomes_image"
    " ON cascade_outcomes(device_id, image_sha256)",
)


def _read_outcomes(conn: Connection) -> None:
    from appliance.hub import cascade_outcomes

    cascade_outcomes.rebuild(conn)


# Each patient's results per site, programme and ISO week, with their outcomes read,
# kept on write (hub/cascade_rows.py): the care cascade and the indicator exports count
# a period's patients from these rows instead of grouping its results per page. Filled
# from the entries and the outcomes read by migration 9 (Python: the same reading as
# on write, on both databases).
CASCADE_ROWS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS cascade_rows (
        site TEXT NOT NULL,
        route TEXT NOT NULL,
        patient TEXT NOT NULL,
        week TEXT NOT NULL,
        screened_on TEXT,
        flagged_on TEXT,
        prev_week TEXT,
        prev_flag_week TEXT,
        next_flag_week TEXT,
        screen_bucket TEXT NOT NULL,
        flag_bucket TEXT NOT NULL,
        first_test TEXT,
        confirmed INTEGER NOT NULL,
        treated INTEGER NOT NULL,
        wait INTEGER,
        PRIMARY KEY (site, route, patient, week)
    )""",
    "CREATE INDEX IF NOT EXISTS cascade_rows_week ON cascade_rows(week, site)",
    "CREATE INDEX IF NOT EXISTS cascade_rows_site ON cascade_rows(site, week)",
    "CREATE INDEX IF NOT EXISTS cascade_outcomes_patient ON cascade_outcomes(patient, route)",
)


# The outcomes that could not be read, which every cascade page counts and shows: a
# partial index holds only those (none, mostly), where the count read all outcomes.
UNREADABLE_OUTCOMES: tuple[str, ...] = (
    "CREATE INDEX IF NOT EXISTS cascade_outcomes_unreadable"
    " ON cascade_outcomes(device_id) WHERE readable = 0",
)


def _count_patients(conn: Connection) -> None:
    from appliance.hub import cascade_rows

    cascade_rows.rebuild(conn)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    # run first, on that backend only (where the two dialects differ)
    by_backend: dict[str, tuple[str, ...]] | None = None
    # run last, in the same transaction: what SQL alone cannot read alike on both
    then: Callable[[Connection], None] | None = None

    def for_backend(self, backend: str) -> tuple[str, ...]:
        return (*(self.by_backend or {}).get(backend, ()), *self.statements)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema: devices, codes, entries, images, imports, logins", INITIAL),
    Migration(2, "tallies per device and week, and per model; indexes for exports", TALLIES),
    Migration(3, "model bundles, rollouts, boxes' versions; FHIR push ledger",
              DISTRIBUTION_AND_FHIR),
    Migration(4, "patient and day columns, arrival-order index: FHIR search and push at scale",
              FHIR_INDEXES, FHIR_COLUMNS_BY_BACKEND),
    Migration(5, "bad records noted by readers, quarantined entries, admin actions",
              BAD_RECORDS),
    Migration(6, "training exports: box keys, exports, images, labels, locked test split",
              TRAINING),
    Migration(7, "who made each admin and enrolment code (web first run, admin pages)",
              ADMIN_PAGES),
    Migration(8, "results per device, week and programme (chest, retina) for the programme pages",
              PROGRAMME_TALLIES),
    Migration(9, "each confirmatory outcome read once, for the care cascade",
              CASCADE_OUTCOMES, then=_read_outcomes),
    Migration(10, "each patient's results per week, for the care cascade and its exports",
              CASCADE_ROWS, then=_count_patients),
    Migration(11, "the outcomes that could not be read, indexed for the care cascade's pages",
              UNREADABLE_OUTCOMES),
)
LATEST = MIGRATIONS[-1].version

LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""
ADVISORY_LOCK = 74_180_318  # any constant: "the hub's schema" for pg_advisory_xact_lock


def applied_versions(conn: Connection) -> list[int]:
    rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version")
    return [int(r["version"]) for r in rows]


def check_not_newer(versions: list[int]) -> None:
    newest = max(versions, default=0)
    if newest > LATEST:
        raise HubDatabaseError(
            f"the hub database is at schema version {newest}, newer than this hub knows "
            f"({LATEST}): run the newer hub software, or restore a backup made for this one"
        )


def migrate(conn: Connection) -> list[int]:
    """Apply every pending migration in one transaction; returns the versions applied."""
    from appliance.hub.records import now

    with conn.transaction():
        if conn.backend == "postgresql":
            conn.execute("SELECT pg_advisory_xact_lock(?)", (ADVISORY_LOCK,))
            # Counting a million entries may take longer than a request's timeout.
            conn.execute("SET LOCAL statement_timeout = 0")
        conn.execute(LEDGER)
        held = applied_versions(conn)
        check_not_newer(held)
        done = []
        for migration in MIGRATIONS:
            if migration.version in held:
                continue
            for statement in migration.for_backend(conn.backend):
                conn.execute(statement)
            if migration.then is not None:
                migration.then(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, now()),
            )
            done.append(migration.version)
    return done
