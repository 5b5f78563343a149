"""Outcomes, calibration and monitoring through the command line (click's runner, real
data directory): what a person reads, and the exit status a script checks."""

from __future__ import annotations

import json

from click.testing import CliRunner
from monitoring.cases import VERSION, confirm, population, scored

from appliance.cli import main
from appliance.store.db import Store


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_an_import_with_a_bad_row_imports_nothing_and_says_which_row(tmp_path):
    data = tmp_path / "data"
    store = Store.open(data)
    names = scored(store, [0.8, 0.2])
    store.close()
    register = tmp_path / "lab.csv"
    register.write_text(
        "original_name,test,result,date\n"
        f"{names[0]},xpert,positive,2024-05-01\n"
        "IM-gone.png,xpert,negative,2024-05-01\n"
    )
    bad = run("outcomes", "import", str(register), "--data-dir", str(data))
    assert bad.exit_code == 1
    assert "row 3: no image named IM-gone.png" in bad.output
    assert "Nothing imported: 1 of 2 rows do not match." in bad.output
    assert json.loads(run("outcomes", "--data-dir", str(data), "--json").output) == []

    register.write_text(
        "original_name,test,result,date\n"
        f"{names[0]},xpert,positive,2024-05-01\n"
        f"{names[1]},xpert,negative,2024-05-01\n"
    )
    good = run("outcomes", "import", str(register), "--data-dir", str(data), "--by", "lab")
    assert good.exit_code == 0
    assert "2 outcome(s) imported for 2 image(s); 0 already on the box." in good.output
    listed = run("outcomes", "--data-dir", str(data)).output
    assert "xpert          positive      (flagged)" in listed and "entered by lab" in listed


def test_calibrate_says_why_there_is_no_recommendation_and_refuses_to_apply(tmp_path):
    data = tmp_path / "data"
    store = Store.open(data)
    confirm(store, scored(store, [0.9] * 3 + [0.1] * 3), [True] * 3 + [False] * 3)
    store.close()
    shown = run("calibrate", "cxr-pneumonia", "--data-dir", str(data))
    assert shown.exit_code == 0
    assert "3 confirmed positive, 3 confirmed negative" in shown.output
    assert "!! Not enough confirmed cases to recommend a threshold" in shown.output
    assert "recommended for sensitivity" not in shown.output
    assert "Decision support, not a diagnosis" in shown.output
    refused = run("calibrate", "cxr-pneumonia", "--apply", "--data-dir", str(data))
    assert refused.exit_code == 1 and "Nothing to apply" in refused.output
    unknown = run("calibrate", "modality-router", "--data-dir", str(data))
    assert unknown.exit_code == 1 and "has no site threshold to calibrate" in unknown.output
    nothing = run("calibrate", "cxr-pneumonia", "--rollback", "--data-dir", str(data))
    assert nothing.exit_code == 1 and "No calibration of cxr-pneumonia to roll back" in (
        nothing.output
    )


def test_calibrate_prints_the_table_and_applies(tmp_path):
    data = tmp_path / "data"
    store = Store.open(data)
    scores, labels = population(200, seed=3)
    confirm(store, scored(store, scores), labels)
    store.close()
    applied = run(
        "calibrate", "cxr-pneumonia", "--apply", "--by", "dr.banda", "--data-dir", str(data)
    )
    assert applied.exit_code == 0, applied.output
    assert "threshold  sensitivity (95% CI)   specificity (95% CI)   referred" in applied.output
    assert "recommended for sensitivity 0.9:" in applied.output
    assert "of the last 200 images:" in applied.output
    assert "applied: cxr_threshold = " in applied.output and "Undo with --rollback" in (
        applied.output
    )
    store = Store.open(data)
    actor = (
        store.conn()
        .execute("SELECT actor FROM audit_log WHERE action = 'calibration.applied'")
        .fetchone()[0]
    )
    store.close()
    assert actor == "dr.banda"


def test_monitor_reports_in_words_and_refuses_a_baseline_of_too_few_results(tmp_path):
    data = tmp_path / "data"
    store = Store.open(data)
    scored(store, [0.5] * 5)
    store.close()
    text = run("monitor", "--data-dir", str(data)).output
    # The last results are counted even while they are the baseline too (issue 24).
    assert f"cxr-pneumonia {VERSION}: last 5 results" in text
    # Five results cannot be checked: the report says so instead of "no warnings".
    assert "last 5 results (too few to check yet: 30 needed)" in text
    assert "no warnings yet: no model has enough recent results to check" in text
    assert "Decision support, not a diagnosis" in text
    report = json.loads(run("monitor", "--data-dir", str(data), "--json").output)
    assert report["models"]["cxr-pneumonia"]["baseline"]["results"] == 5
    refused = run("monitor", "--accept", "cxr-pneumonia", "--data-dir", str(data))
    assert refused.exit_code == 1
    assert "Only 5 results of cxr-pneumonia: at least 30 are needed" in refused.output
