"""Running and checking the box from the command line: migrate, settings errors, doctor,
failed screenings queued again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner
from helpers import FUNDUS_DIR

from appliance.cli import main
from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.screening.pipeline import Screener
from appliance.store.db import Store
from appliance.worker import Worker


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_migrate_is_idempotent(tmp_path):
    data = str(tmp_path / "data")
    assert (
        "applied: m001_initial, m002_results, m003_users_reviews"
        in run("migrate", "--data-dir", data).output
    )
    assert "up to date" in run("migrate", "--data-dir", data).output


def test_bad_setting_is_a_one_line_error_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_PORT", "eighty")
    result = CliRunner().invoke(main, ["studies", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error: setting 'port' from environment APPLIANCE_PORT" in result.output


def test_doctor_reports_backends_models_storage_and_engines(tmp_path):
    from appliance.inference.engines.status import write_status

    data = tmp_path / "data"
    write_status(
        data,
        {
            "state": "working",
            "detail": "building 1 of 3",
            "bundles": {
                "cxr-pneumonia": {"state": "building", "serving": "onnxruntime", "error": None}
            },
        },
    )
    result = CliRunner().invoke(main, ["doctor", "--data-dir", str(data), "--json"])
    assert result.exit_code == 0, result.output  # no TensorRT here is not a problem
    report = json.loads(result.output)
    assert {b["name"] for b in report["backends"]} == {"onnxruntime", "tensorrt"}
    assert all(m["ok"] and "sha256 verified" in m["detail"] for m in report["models"])
    assert report["engines"][1] == {
        "name": "cxr-pneumonia",
        "ok": True,
        "detail": "building, serving on onnxruntime",
    }
    text = CliRunner().invoke(main, ["doctor", "--data-dir", str(data)]).output
    assert "[engines]" in text and "all good" in text


def test_work_retry_failed_queues_failed_screenings_again_and_says_how_many(tmp_path, models):
    """Real ``appliance work`` processes: one queues again and exits, one also screens."""
    data = tmp_path / "data"
    config = load_config(data, environ={}, usb_roots=[], min_free_mb=1, job_max_attempts=1)
    store = Store.open(data)
    importer = Importer(store, config)
    worker = Worker(store, config, Screener(models, config), name="t")

    def import_and_fail(name: str) -> int:
        """The original is gone for a while (a disk fault): its screening fails for good."""
        image_id = importer.import_path(FUNDUS_DIR / name, source="usb").image_id
        stored = store.conn().execute("SELECT stored_path FROM images WHERE id=?", (image_id,))
        original = data / stored.fetchone()[0]
        kept = original.read_bytes()
        original.unlink()
        worker.drain()
        original.write_bytes(kept)
        return image_id

    def job(image_id: int) -> tuple:
        row = store.conn().execute("SELECT state, attempts FROM jobs WHERE image_id=?", (image_id,))
        return tuple(row.fetchone())

    def work(*flags: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update(APPLIANCE_USB_ROOTS="", APPLIANCE_MIN_FREE_MB="1")
        done = subprocess.run(
            [sys.executable, "-m", "appliance", "work", "--data-dir", str(data), *flags],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = import_and_fail("hrf_12_h.jpg")
    assert job(first) == ("failed", 1)
    assert json.loads(work("--retry-failed", "--json")) == {"requeued": 1}
    assert job(first) == ("queued", 0)
    audit = store.conn().execute(
        "SELECT actor, subject FROM audit_log WHERE action='screening.retried'"
    )
    assert [tuple(r) for r in audit] == [("cli", f"image:{first}")]
    assert work("--retry-failed") == "0 failed screening(s) queued again\n"

    second = import_and_fail("hrf_07_h.jpg")  # the first is screened meanwhile
    assert (job(first), job(second)) == (("done", 1), ("failed", 1))
    assert work("--retry-failed", "--drain") == (
        "1 failed screening(s) queued again\n1 job(s) processed\n"
    )
    assert job(second) == ("done", 1)
    assert store.conn().execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2
    store.close()


def test_work_json_needs_something_to_report(tmp_path):
    result = CliRunner().invoke(main, ["work", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 2 and "--json needs --drain or --retry-failed" in result.output
