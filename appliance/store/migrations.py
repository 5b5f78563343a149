"""Schema history. Never edit a migration once it has shipped: add a new one.

Why this is long: it is the schema's whole history, one function per change, and a
shipped migration is never edited or moved.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("appliance")


@migrations()
def m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE studies (
            id INTEGER PRIMARY KEY,
            study_instance_uid TEXT NOT NULL UNIQUE,
            patient_id TEXT,
            patient_name TEXT,
            study_date TEXT,
            study_description TEXT,
            accession_number TEXT,
            created_at TEXT NOT NULL
        );

        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            study_id INTEGER NOT NULL REFERENCES studies(id),
            sop_instance_uid TEXT UNIQUE,
            series_instance_uid TEXT,
            sop_class_uid TEXT,
            transfer_syntax_uid TEXT,
            modality TEXT,
            body_part TEXT,
            view_position TEXT,
            laterality TEXT,
            rows INTEGER,
            columns INTEGER,
            frames INTEGER,
            file_format TEXT NOT NULL,
            source TEXT NOT NULL,
            source_detail TEXT,
            original_name TEXT,
            sha256 TEXT NOT NULL UNIQUE,
            size_bytes INTEGER NOT NULL,
            stored_path TEXT NOT NULL,
            received_at TEXT NOT NULL,
            decoded_at TEXT,
            decode_info TEXT,
            preview_path TEXT,
            state TEXT NOT NULL DEFAULT 'received'
                CHECK (state IN ('received', 'decoded', 'quarantined'))
        );
        CREATE INDEX images_study ON images(study_id);
        CREATE INDEX images_received ON images(received_at);

        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            image_id INTEGER NOT NULL REFERENCES images(id),
            priority INTEGER NOT NULL DEFAULT 100,
            state TEXT NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'running', 'done', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_expires REAL,
            last_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (kind, image_id)
        );
        CREATE INDEX jobs_ready ON jobs(state, priority, id);

        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            image_id INTEGER REFERENCES images(id),
            sha256 TEXT NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT,
            source TEXT NOT NULL,
            source_detail TEXT,
            original_name TEXT,
            stored_path TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            received_at TEXT NOT NULL
        );
        CREATE INDEX quarantine_sha ON quarantine(sha256);

        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            detail TEXT
        );
        -- Append-only: the database itself refuses to change history.
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

        CREATE TABLE volumes (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            label TEXT,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            present INTEGER NOT NULL DEFAULT 1,
            importable INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            imported INTEGER NOT NULL DEFAULT 0,
            quarantined INTEGER NOT NULL DEFAULT 0,
            duplicates INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'seen'
        );
        """
    )


@migrations()
def m002_results(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE results (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id),
            job_id INTEGER REFERENCES jobs(id),
            route TEXT NOT NULL CHECK (route IN ('chest_xray', 'fundus', 'refused')),
            reason TEXT,
            hints TEXT,
            probability REAL,
            score INTEGER,
            threshold REAL,
            triage TEXT CHECK (triage IN ('urgent', 'review', 'routine')),
            model_name TEXT,
            model_version TEXT,
            model_sha256 TEXT,
            backend TEXT,
            router TEXT,
            quality TEXT,
            heatmap_path TEXT,
            timings TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX results_image ON results(image_id);
        CREATE INDEX results_triage ON results(triage, created_at);
        -- An AI result is evidence: reviews are stored beside it, never over it.
        CREATE TRIGGER results_no_update BEFORE UPDATE ON results
            BEGIN SELECT RAISE(ABORT, 'results are never changed'); END;
        CREATE TRIGGER results_no_delete BEFORE DELETE ON results
            BEGIN SELECT RAISE(ABORT, 'results are never deleted'); END;
        """
    )


@migrations()
def m003_users_reviews(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL UNIQUE COLLATE NOCASE,
            pin_hash TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('operator', 'clinician', 'admin')),
            language TEXT NOT NULL DEFAULT 'en',
            active INTEGER NOT NULL DEFAULT 1,
            failed_attempts INTEGER NOT NULL DEFAULT 0,
            locked_until REAL,
            created_at TEXT NOT NULL,
            last_login_at TEXT
        );

        -- A clinician's reading of an AI result, stored beside it (never over it).
        CREATE TABLE reviews (
            id INTEGER PRIMARY KEY,
            result_id INTEGER NOT NULL REFERENCES results(id),
            image_id INTEGER NOT NULL REFERENCES images(id),
            user_id INTEGER NOT NULL REFERENCES users(id),
            verdict TEXT NOT NULL CHECK (verdict IN ('agree', 'disagree')),
            reasons TEXT NOT NULL DEFAULT '[]',
            note TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX reviews_image ON reviews(image_id, id);
        CREATE INDEX results_image_id ON results(image_id, id);
        CREATE INDEX images_state ON images(state);
        """
    )


@migrations()
def m005_sync_outbox(db: Database) -> None:
    db.executescript(
        """
        -- What the hub has not yet acknowledged, written in the transaction that creates
        -- the result or review (appliance/sync/outbox.py). Rows are never deleted: an
        -- acknowledged row only changes state.
        CREATE TABLE sync_outbox (
            id INTEGER PRIMARY KEY,
            entry_id TEXT NOT NULL,
            revision INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('result', 'review')),
            local_id INTEGER NOT NULL,
            image_id INTEGER NOT NULL REFERENCES images(id),
            payload TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'acked', 'superseded')),
            created_at TEXT NOT NULL,
            exported_at TEXT,
            acked_at TEXT,
            UNIQUE (entry_id, revision)
        );
        CREATE INDEX sync_outbox_send ON sync_outbox(state, kind, id);
        CREATE INDEX sync_outbox_local ON sync_outbox(kind, local_id);

        -- Originals the hub holds completely (only when sync_images is on).
        CREATE TABLE sync_images (
            image_id INTEGER PRIMARY KEY REFERENCES images(id),
            acked_at TEXT NOT NULL
        );

        -- Last attempt, last success, last error, consecutive failures.
        CREATE TABLE sync_state (
            key TEXT PRIMARY KEY,
            value TEXT
        );
        """
    )


@migrations()
def m006_patient_entry(db: Database) -> None:
    # A camera card's photo arrives with no patient: staff type the ID in. Kept beside
    # what was received (which is never changed), with who and when.
    db.executescript(
        """
        ALTER TABLE studies ADD COLUMN entered_patient_id TEXT;
        ALTER TABLE studies ADD COLUMN entered_patient_name TEXT;
        ALTER TABLE studies ADD COLUMN entered_by TEXT;
        ALTER TABLE studies ADD COLUMN entered_at TEXT;
        """
    )


@migrations()
def m007_worklist_items(db: Database) -> None:
    # Self-contained on purpose: a later change to the worklist code must not change
    # what this migration did.
    db.executescript(
        """
        CREATE TABLE worklist_items (
            image_id INTEGER PRIMARY KEY REFERENCES images(id),
            status TEXT NOT NULL,
            rank INTEGER NOT NULL,
            received_at TEXT NOT NULL,
            result_id INTEGER REFERENCES results(id),
            review_id INTEGER REFERENCES reviews(id)
        );
        CREATE INDEX worklist_items_order ON worklist_items(rank, image_id DESC);
        CREATE INDEX worklist_items_received ON worklist_items(received_at);
        INSERT INTO worklist_items (image_id, status, rank, received_at, result_id, review_id)
        SELECT i.id,
               CASE WHEN r.id IS NULL THEN 'waiting' WHEN v.id IS NOT NULL THEN 'reviewed'
                    WHEN r.route = 'refused' THEN 'refused' ELSE 'screened' END,
               CASE WHEN r.id IS NOT NULL AND v.id IS NOT NULL THEN 6
                    WHEN r.triage = 'urgent' THEN 0 WHEN r.triage = 'review' THEN 1
                    WHEN r.route = 'refused' THEN 2 WHEN r.id IS NULL THEN 3 ELSE 4 END,
               i.received_at, r.id, v.id
        FROM images i
        LEFT JOIN results r ON r.id = (SELECT MAX(id) FROM results WHERE image_id = i.id)
        LEFT JOIN reviews v ON v.id = (SELECT MAX(id) FROM reviews WHERE image_id = i.id);
        """
    )


@migrations()
def m008_patient_age(db: Database) -> None:
    # The chest model was trained on children: the screen needs the patient's age.
    db.executescript(
        """
        ALTER TABLE studies ADD COLUMN patient_birth_date TEXT;
        ALTER TABLE studies ADD COLUMN patient_age TEXT;
        """
    )


@migrations()
def m009_outbox_destinations(db: Database) -> None:
    # The hub's outbox becomes the deliveries outbox: every row names the kind of
    # receiver it is for (PACS and FHIR will join the hub), and an entry's revisions are
    # unique per destination. SQLite cannot change a UNIQUE constraint in place, so the
    # table is rebuilt; the rows keep their ids and all become the hub's. No CHECK on
    # kind or destination: those are checked in appliance/store/outbox.py, so a new
    # receiver does not need another rebuild.
    db.executescript(
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            destination TEXT NOT NULL,
            entry_id TEXT NOT NULL,
            revision INTEGER NOT NULL,
            kind TEXT NOT NULL,
            local_id INTEGER NOT NULL,
            image_id INTEGER NOT NULL REFERENCES images(id),
            payload TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'acked', 'superseded')),
            created_at TEXT NOT NULL,
            exported_at TEXT,
            acked_at TEXT,
            UNIQUE (destination, entry_id, revision)
        );
        INSERT INTO outbox (id, destination, entry_id, revision, kind, local_id, image_id,
                            payload, state, created_at, exported_at, acked_at)
        SELECT id, 'hub', entry_id, revision, kind, local_id, image_id,
               payload, state, created_at, exported_at, acked_at
        FROM sync_outbox;
        DROP TABLE sync_outbox;
        CREATE INDEX outbox_send ON outbox(destination, state, kind, id);
        CREATE INDEX outbox_local ON outbox(destination, kind, local_id);
        """
    )


@migrations()
def m010_job_lease_clock(db: Database) -> None:
    # Leases move to the monotonic clock (appliance/store/jobs.py says why): when a
    # lease was taken, on that clock. A lease held at the upgrade has none and counts
    # as run out, which is right: its holder was the process the upgrade stopped.
    db.executescript("ALTER TABLE jobs ADD COLUMN lease_taken REAL;")


@migrations()
def m011_chest_population(db: Database) -> None:
    # Two chest models (adults, children): each result says which population it was
    # screened as and how that was decided. An X-ray without an age waits for staff to
    # choose where the site asks them to (images.waiting_for), and their choice is kept
    # with the image, with who and when.
    db.executescript(
        """
        ALTER TABLE results ADD COLUMN population TEXT;
        ALTER TABLE results ADD COLUMN population_source TEXT;
        ALTER TABLE images ADD COLUMN population TEXT
            CHECK (population IS NULL OR population IN ('adult', 'child'));
        ALTER TABLE images ADD COLUMN population_by TEXT;
        ALTER TABLE images ADD COLUMN population_at TEXT;
        ALTER TABLE images ADD COLUMN waiting_for TEXT;
        """
    )


@migrations()
def m012_sessions_login_throttle(db: Database) -> None:
    # Logins live here, not in the cookie: logging out ends them for good (a copied
    # cookie stops working), and failed logins are counted atomically per client.
    # users.failed_attempts and users.locked_until are no longer used.
    db.executescript(
        """
        CREATE TABLE sessions (
            id_hash TEXT PRIMARY KEY,
            subject TEXT NOT NULL,
            created_at REAL NOT NULL,
            seen_at REAL NOT NULL
        );
        CREATE INDEX sessions_subject ON sessions(subject);

        CREATE TABLE login_throttle (
            key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            blocked_until REAL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX login_throttle_updated ON login_throttle(updated_at);
        """
    )


@migrations()
def m013_job_decoding_since(db: Database) -> None:
    # Set durably before a worker decodes, cleared when the decode is over: a job found
    # with it set on its next attempt stopped the box mid-decode (an OOM kill, say), so
    # it is decoded again only in a memory-limited child process, never straight away.
    db.execute("ALTER TABLE jobs ADD COLUMN decoding_since TEXT")


@migrations()
def m014_outcomes_and_monitoring(db: Database) -> None:
    # Numbered after main's m012 and m013 (written meanwhile on other branches), so
    # merged, the three apply in one order everywhere.
    # Confirmatory outcomes (a lab's or specialist's reference result per image), the
    # site threshold's history (kept for rollback), the site's drift baselines, and the
    # measures of each image that drift monitoring compares. History tables are
    # append-only like results and reviews: a correction is a new row.
    # The outbox is rebuilt so an entry may belong to no image (the box's monitoring
    # summary): SQLite cannot drop a NOT NULL in place. Rows keep their ids.
    db.executescript(
        """
        CREATE TABLE outcomes (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id),
            test TEXT NOT NULL,
            result TEXT NOT NULL,
            positive INTEGER CHECK (positive IS NULL OR positive IN (0, 1)),
            grade INTEGER,
            tested_on TEXT NOT NULL,
            entered_by TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX outcomes_image ON outcomes(image_id, test, id);
        CREATE TRIGGER outcomes_no_update BEFORE UPDATE ON outcomes
            BEGIN SELECT RAISE(ABORT, 'outcomes are never changed'); END;
        CREATE TRIGGER outcomes_no_delete BEFORE DELETE ON outcomes
            BEGIN SELECT RAISE(ABORT, 'outcomes are never deleted'); END;

        CREATE TABLE threshold_changes (
            id INTEGER PRIMARY KEY,
            model_name TEXT NOT NULL,
            model_version TEXT,
            setting TEXT NOT NULL,
            old_value REAL NOT NULL,
            new_value REAL NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('apply', 'rollback')),
            undoes INTEGER REFERENCES threshold_changes(id),
            detail TEXT,
            actor TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TRIGGER threshold_changes_no_update BEFORE UPDATE ON threshold_changes
            BEGIN SELECT RAISE(ABORT, 'threshold history is append-only'); END;
        CREATE TRIGGER threshold_changes_no_delete BEFORE DELETE ON threshold_changes
            BEGIN SELECT RAISE(ABORT, 'threshold history is append-only'); END;

        CREATE TABLE monitor_baselines (
            id INTEGER PRIMARY KEY,
            scope TEXT NOT NULL,
            model_version TEXT,
            first_result_id INTEGER NOT NULL,
            last_result_id INTEGER NOT NULL,
            actor TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TRIGGER monitor_baselines_no_update BEFORE UPDATE ON monitor_baselines
            BEGIN SELECT RAISE(ABORT, 'baselines are append-only'); END;
        CREATE TRIGGER monitor_baselines_no_delete BEFORE DELETE ON monitor_baselines
            BEGIN SELECT RAISE(ABORT, 'baselines are append-only'); END;

        ALTER TABLE results ADD COLUMN image_stats TEXT;
        CREATE INDEX results_model ON results(model_name, model_version, id);

        CREATE TABLE outbox_rebuilt (
            id INTEGER PRIMARY KEY,
            destination TEXT NOT NULL,
            entry_id TEXT NOT NULL,
            revision INTEGER NOT NULL,
            kind TEXT NOT NULL,
            local_id INTEGER NOT NULL,
            image_id INTEGER REFERENCES images(id),
            payload TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'acked', 'superseded')),
            created_at TEXT NOT NULL,
            exported_at TEXT,
            acked_at TEXT,
            UNIQUE (destination, entry_id, revision)
        );
        INSERT INTO outbox_rebuilt (id, destination, entry_id, revision, kind, local_id,
                                    image_id, payload, state, created_at, exported_at,
                                    acked_at)
        SELECT id, destination, entry_id, revision, kind, local_id, image_id, payload, state,
               created_at, exported_at, acked_at
        FROM outbox;
        DROP TABLE outbox;
        ALTER TABLE outbox_rebuilt RENAME TO outbox;
        CREATE INDEX outbox_send ON outbox(destination, state, kind, id);
        CREATE INDEX outbox_local ON outbox(destination, kind, local_id);
        """
    )


@migrations()
def m015_job_disk_waits(db: Database) -> None:
    # Numbered after m014_outcomes_and_monitoring (written meanwhile on another
    # branch), so merged, the two apply in one order everywhere.
    # A full disk is not the image's fault: a job that meets one goes back to the queue
    # until ``not_before`` (on the monotonic clock, like leases: store/jobs.py) without
    # spending an attempt, and ``disk_waits`` counts such waits in a row for the backoff.
    # Screenings that had failed on a full disk before this (every attempt spent in
    # milliseconds) are queued again with fresh attempts; an image whose screening failed
    # for another reason says so on the worklist instead of "waiting" for ever.
    db.executescript(
        """
        ALTER TABLE jobs ADD COLUMN not_before REAL;
        ALTER TABLE jobs ADD COLUMN disk_waits INTEGER NOT NULL DEFAULT 0;
        UPDATE jobs SET state = 'queued', attempts = 0, lease_owner = NULL,
                        lease_taken = NULL, lease_expires = NULL
            WHERE state = 'failed'
              AND (last_error LIKE 'StorageFullError:%'
                   OR last_error LIKE '%database or disk is full%'
                   OR last_error LIKE '%No space left on device%');
        UPDATE worklist_items SET status = 'failed', rank = 2
            WHERE result_id IS NULL AND status = 'waiting'
              AND image_id IN (SELECT image_id FROM jobs
                               WHERE kind = 'screen' AND state = 'failed');
        """
    )


@migrations()
def m016_visits_and_chosen_routes(db: Database) -> None:
    # Photos of one visit: where an image came from as one key (a USB stick, an upload
    # batch, a DICOM sender) and when it was taken (seconds, on the clock ``taken_from``
    # names: the camera's EXIF time, the file's time, or when the box received it).
    # Photos of one source taken close together on one clock are a visit
    # (store/visits.py); images stored before this have none and stand alone.
    # A clinician may have the box screen an image its router refused as a chest X-ray
    # or a retina photo: the choice is kept with the image (who, when), and each result
    # says what decided its route (results.route_source: tags, router, quality or
    # clinician; NULL for results stored before this).
    db.executescript(
        """
        ALTER TABLE images ADD COLUMN visit_key TEXT;
        ALTER TABLE images ADD COLUMN taken_at REAL;
        ALTER TABLE images ADD COLUMN taken_from TEXT;
        ALTER TABLE images ADD COLUMN route_chosen TEXT
            CHECK (route_chosen IS NULL OR route_chosen IN ('chest_xray', 'fundus'));
        ALTER TABLE images ADD COLUMN route_chosen_by TEXT;
        ALTER TABLE images ADD COLUMN route_chosen_at TEXT;
        ALTER TABLE results ADD COLUMN route_source TEXT;
        CREATE INDEX images_visit ON images(visit_key, taken_from, taken_at);
        """
    )


@migrations()
def m017_model_versions(db: Database) -> None:
    # Numbered after m016 (written meanwhile on another branch), so merged, the two
    # apply in one order everywhere.
    # Model bundles over their life (appliance/lifecycle): one row per (name, version)
    # the box has installed, refused or shipped with. At most one active version per
    # name (the partial unique index); the shipped bundles are active until something
    # else is. ``model_generation`` counts activations so a running worker sees, between
    # jobs, that it should load another set. Shadow results live in their own table:
    # nothing that reads ``results`` or the outbox (worklist, hub, PACS) can see them.
    db.executescript(
        """
        CREATE TABLE model_versions (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('active', 'shadow', 'installed', 'refused')),
            source TEXT NOT NULL CHECK (source IN ('bundled', 'installed')),
            key_id TEXT,
            reason TEXT,
            installed_at TEXT,
            activated_at TEXT,
            previous_version TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (name, version)
        );
        CREATE UNIQUE INDEX model_versions_one_active ON model_versions(name)
            WHERE state = 'active';

        CREATE TABLE model_generation (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            generation INTEGER NOT NULL
        );
        INSERT INTO model_generation (id, generation) VALUES (1, 0);

        CREATE TABLE shadow_results (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id),
            job_id INTEGER REFERENCES jobs(id),
            result_id INTEGER REFERENCES results(id),
            model_name TEXT NOT NULL,
            model_version TEXT NOT NULL,
            active_version TEXT,
            route TEXT,
            probability REAL,
            score INTEGER,
            threshold REAL,
            triage TEXT,
            timings TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX shadow_results_model ON shadow_results(model_name, model_version, id);

        ALTER TABLE jobs ADD COLUMN model_versions TEXT;
        """
    )


@migrations()
def m018_pacs_deliveries(db: Database) -> None:
    # Numbered after m016 and m017 (written meanwhile on other branches), so merged,
    # they apply in one order everywhere.
    # DICOM results to PACS (appliance/pacs) go through the deliveries outbox with the
    # destination ``pacs``: one row per (result, PACS) and SR revision. ``pacs_targets``
    # is the configured list (written at start-up from ``pacs_destinations``), so the
    # store can queue a row for each inside the result's transaction without reading the
    # settings, and holds each PACS's backoff so it survives a restart. A row a PACS
    # refused counts its tries in ``attempts`` (an unreachable PACS spends none).
    # ``mwl_entries`` caches the modality worklist (appliance/pacs/worklist.py): the
    # procedures scheduled per day as the RIS last gave them, usable while it is down;
    # ``mwl_state`` says when it was last asked and answered.
    db.executescript(
        """
        CREATE TABLE pacs_targets (
            address TEXT PRIMARY KEY,
            objects TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 1,
            failures INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            last_attempt_at TEXT,
            last_success_at TEXT,
            last_error TEXT,
            updated_at TEXT NOT NULL
        );
        ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE outbox ADD COLUMN last_error TEXT;

        CREATE TABLE mwl_entries (
            id INTEGER PRIMARY KEY,
            scheduled_date TEXT NOT NULL,
            scheduled_time TEXT,
            modality TEXT,
            station_aet TEXT,
            patient_id TEXT NOT NULL,
            patient_name TEXT,
            patient_birth_date TEXT,
            patient_sex TEXT,
            accession_number TEXT,
            study_instance_uid TEXT,
            description TEXT,
            fetched_at TEXT NOT NULL
        );
        CREATE INDEX mwl_entries_day ON mwl_entries(scheduled_date, patient_id);
        CREATE TABLE mwl_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last_attempt_at TEXT,
            last_success_at TEXT,
            last_error TEXT,
            entries INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO mwl_state (id) VALUES (1);
        """
    )


@migrations()
def m019_image_other_names(db: Database) -> None:
    # Issue 24, defect 13: the same image arriving again under another file name is a
    # duplicate (the first copy is kept), but a lab register may name either file. The
    # other names are remembered here so the outcomes import finds the image by them.
    db.executescript(
        """
        CREATE TABLE image_other_names (
            image_id INTEGER NOT NULL REFERENCES images(id),
            name TEXT NOT NULL,
            first_seen_at TEXT NOT NULL,
            PRIMARY KEY (image_id, name)
        );
        CREATE INDEX image_other_names_name ON image_other_names(name);
        """
    )


@migrations()
def m020_outbox_refused(db: Database) -> None:
    # Issue 25: a receiver that checks each entry against its schema may refuse one (the
    # hub names the field). Such a row is kept, never sent again, and shown on the
    # System page: the state ``refused``, when (``refused_at``) and the receiver's reason
    # (in ``last_error``). A later revision of the entry (e.g. a patient typed in) is a
    # new pending row and is tried again. SQLite cannot change a CHECK in place: the
    # outbox is rebuilt, as in m014; rows keep their ids and every column.
    db.executescript(
        """
        CREATE TABLE outbox_rebuilt (
            id INTEGER PRIMARY KEY,
            destination TEXT NOT NULL,
            entry_id TEXT NOT NULL,
            revision INTEGER NOT NULL,
            kind TEXT NOT NULL,
            local_id INTEGER NOT NULL,
            image_id INTEGER REFERENCES images(id),
            payload TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'acked', 'superseded', 'refused')),
            created_at TEXT NOT NULL,
            exported_at TEXT,
            acked_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            refused_at TEXT,
            UNIQUE (destination, entry_id, revision)
        );
        INSERT INTO outbox_rebuilt (id, destination, entry_id, revision, kind, local_id,
                                    image_id, payload, state, created_at, exported_at,
                                    acked_at, attempts, last_error)
        SELECT id, destination, entry_id, revision, kind, local_id, image_id, payload, state,
               created_at, exported_at, acked_at, attempts, last_error
        FROM outbox;
        DROP TABLE outbox;
        ALTER TABLE outbox_rebuilt RENAME TO outbox;
        CREATE INDEX outbox_send ON outbox(destination, state, kind, id);
        CREATE INDEX outbox_local ON outbox(destination, kind, local_id);
        CREATE INDEX outbox_refused ON outbox(destination, refused_at) WHERE state = 'refused';
        """
    )


@migrations()
def m021_worklist_cache_checked(db: Database) -> None:
    # Issue 25: worklist answers are now checked where they arrive (pacs/worklist.py)
    # and the cache keeps only today and yesterday. Rows cached before that may hold
    # anything a RIS sent: old or far-future days, overlong fields, control characters,
    # times such as 'XX:YY'. They are deleted here (a time that is not HH:MM is only
    # blanked); the next refresh, minutes later, brings back the entries still scheduled,
    # checked. Margins of a day around UTC's today keep the box's local today/yesterday.
    controls = "'*[' || char(1) || '-' || char(31) || char(127) || ']*'"
    checks = " OR ".join(
        [
            "scheduled_date < date('now', '-2 days')",
            "scheduled_date > date('now', '+1 day')",
            *(
                f"length({column}) > {limit} OR {column} GLOB {controls}"
                for column, limit in (
                    ("patient_id", 64),
                    ("patient_name", 64),
                    ("accession_number", 16),
                    ("study_instance_uid", 64),
                    ("description", 64),
                    ("modality", 16),
                    ("station_aet", 16),
                    ("patient_sex", 16),
                    ("patient_birth_date", 8),
                )
            ),
        ]
    )
    db.execute(f"DELETE FROM mwl_entries WHERE {checks}")
    db.execute(
        "UPDATE mwl_entries SET scheduled_time = NULL"
        " WHERE scheduled_time NOT GLOB '[0-2][0-9]:[0-5][0-9]'"
    )


@migrations()
def m022_quality_overruled(db: Database) -> None:
    # A clinician may have a retina photo the quality check refused screened anyway
    # (issue 26: a retake costs a second dilation or a second trip): who and when, kept
    # with the image, audited; its result says so in a hint (store/routes.py).
    db.executescript(
        """
        ALTER TABLE images ADD COLUMN quality_overruled_by TEXT;
        ALTER TABLE images ADD COLUMN quality_overruled_at TEXT;
        """
    )


@migrations()
def m023_training_consent(db: Database) -> None:
    # Issue 27: where the site asks (setting ``training_consent = "ask"``), staff record
    # on the study page whether the patient agrees that the visit's images may be used
    # to improve the models (store/consent.py). One row per answer, append-only like the
    # audit log: a changed mind is a new row, and the latest answer for a study counts.
    db.executescript(
        """
        CREATE TABLE training_consent (
            id INTEGER PRIMARY KEY,
            study_id INTEGER NOT NULL REFERENCES studies(id),
            answer TEXT NOT NULL CHECK (answer IN ('yes', 'no')),
            answered_by TEXT NOT NULL,
            answered_at TEXT NOT NULL
        );
        CREATE INDEX training_consent_study ON training_consent(study_id, id);
        CREATE TRIGGER training_consent_no_update BEFORE UPDATE ON training_consent
            BEGIN SELECT RAISE(ABORT, 'consent answers are never changed'); END;
        CREATE TRIGGER training_consent_no_delete BEFORE DELETE ON training_consent
            BEGIN SELECT RAISE(ABORT, 'consent answers are never deleted'); END;
        """
    )


@migrations()
def m024_treatments(db: Database) -> None:
    # Treatment started (issue 29): the date and where, for an image's confirmatory
    # outcome, entered on the study page or imported with the lab register. Append-only
    # as outcomes are: a correction is a new row, the latest counts. Sent to the hub as a
    # new revision of the outcome's entry, so an older hub keeps it (an extra field).
    db.executescript(
        """
        CREATE TABLE treatments (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id),
            outcome_id INTEGER NOT NULL REFERENCES outcomes(id),
            started_on TEXT NOT NULL,
            site TEXT NOT NULL,
            entered_by TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX treatments_image ON treatments(image_id, id);
        CREATE INDEX treatments_outcome ON treatments(outcome_id, id);
        CREATE TRIGGER treatments_no_update BEFORE UPDATE ON treatments
            BEGIN SELECT RAISE(ABORT, 'treatments are never changed'); END;
        CREATE TRIGGER treatments_no_delete BEFORE DELETE ON treatments
            BEGIN SELECT RAISE(ABORT, 'treatments are never deleted'); END;
        """
    )
