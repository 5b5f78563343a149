"""Running and checking the box from the command line: migrate, settings errors, doctor."""

from __future__ import annotations

import json

from click.testing import CliRunner

from appliance.cli import main


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

