"""Outcomes, calibration and monitoring: ``outcomes [import]``, ``calibrate``, ``monitor``."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import click

from appliance.cli.options import configure, data_dir_option, json_option, print_json
from appliance.cli.options import translate_errors as translate


def _actor(by: str | None) -> str:
    """Who did it, for the audit log: ``--by``, else the operating-system user."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return by or f"cli:{user}"


def _open(data_dir: Path):
    from appliance.store.db import Store

    config = configure(data_dir)
    return Store.open(config.data_dir), config


@click.group(invoke_without_command=True)
@data_dir_option
@click.option("--limit", default=1000, show_default=True)
@json_option
@click.pass_context
@translate
def outcomes(ctx, data_dir, limit, as_json) -> None:
    """List confirmatory outcomes (lab, specialist or follow-up results), newest first."""
    if ctx.invoked_subcommand is not None:
        return
    from appliance.monitoring.outcomes import list_outcomes

    store, _ = _open(data_dir)
    rows = list_outcomes(store, limit)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        flagged = {1: "flagged", 0: "not flagged"}.get(row["flagged"], "no score")
        name = row["original_name"] or row["sop_instance_uid"] or row["sha256"][:12]
        click.echo(
            f"{row['tested_on']}  #{row['image_id']:<6} {row['patient_id'] or '-':<14}"
            f" {row['test']:<14} {row['result']:<13} ({flagged}) {name}"
            f"  entered by {row['entered_by']}"
        )


@outcomes.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@data_dir_option
@click.option("--by", help="Who entered these results [default: cli:<your user name>].")
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="The file's text encoding when it is not UTF-8, e.g. latin-1 or cp1252.",
)
@json_option
@translate
def import_outcomes(csv_file, data_dir, by, encoding, as_json) -> None:
    """Import outcomes from a lab register's CSV: all rows or none.

    Columns: test, result (positive, negative, a grade 0-4, indeterminate or withdrawn),
    date, and sop_instance_uid, original_name, or patient_id (matched with date) to find
    the image. Optional treatment_started (a date) and treatment_site (where): the
    treatment start for that image's result, on the same row or a row of its own. Every
    row that does not match is reported and nothing is imported. At most 100,000 rows
    per file.
    """
    from appliance.monitoring.outcome_import import import_csv

    store, config = _open(data_dir)
    with csv_file.open("rb") as register:  # read a line at a time, strictly decoded
        report = import_csv(
            store,
            register,
            entered_by=_actor(by),
            source=f"csv:{csv_file.name}",
            match_days=config.outcome_match_days,
            encoding=encoding,
        )
    if as_json:
        print_json(report.as_dict())
    else:
        for problem in report.problems:
            click.echo(problem, err=True)
        if report.problem_rows > len(report.problems):
            click.echo(f"... and {report.problem_rows - len(report.problems)} more rows.", err=True)
        if report.ok:
            click.echo(
                f"{report.imported} outcome(s) imported for {report.images} image(s);"
                f" {report.already} already on the box."
            )
            if report.treatments or report.treatments_already:
                click.echo(
                    f"{report.treatments} treatment start(s) imported;"
                    f" {report.treatments_already} already on the box."
                )
        else:
            click.echo(
                f"Nothing imported: {report.problem_rows} of {report.rows} rows do not match."
                " Correct them and import the file again.",
                err=True,
            )
    sys.exit(0 if report.ok else 1)


def _print_calibration(report: dict) -> None:
    click.echo(
        f"{report['model']} {report['version']}: {report['n_positive']} confirmed positive,"
        f" {report['n_negative']} confirmed negative"
        + (f"; AUC {report['auc']:.3f}" if report["auc"] is not None else "")
    )
    click.echo(
        f"threshold in force {report['current_threshold']:g}"
        f" (bundle's own {report['suggested_threshold']:g})"
    )
    for notice in report["notices"]:
        click.echo(f"!! {notice['message']}")
    click.echo("threshold  sensitivity (95% CI)   specificity (95% CI)   referred")
    for row in report["table"]:
        click.echo(
            f"{row['threshold']:>9.3f}  {_rate(row, 'sensitivity'):<22} "
            f"{_rate(row, 'specificity'):<22} "
            f"{_share(row['referred']):>8}"
            f"  {' '.join(row['marks'])}"
        )
    if report["recommended_threshold"] is not None:
        effect, at = report["effect"], report["at_recommended"]
        click.echo(
            f"recommended for sensitivity {report['target_sensitivity']:g}:"
            f" {report['recommended_threshold']:g} (sensitivity {_rate(at, 'sensitivity')},"
            f" specificity {_rate(at, 'specificity')})"
        )
        click.echo(
            f"of the last {effect['window']} images: {effect['fewer_referrals']} fewer"
            f" referrals, {effect['more_missed']} more missed among confirmed positives"
        )
    click.echo(report["decision_support"])


def _share(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _rate(row: dict, key: str) -> str:
    value, ci = row[key], (row.get("ci") or {}).get(key)
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" + (f" ({100 * ci[0]:.0f}-{100 * ci[1]:.0f})" if ci else "")


@click.command()
@click.argument("model")
@data_dir_option
@click.option(
    "--target-sensitivity",
    type=float,
    default=0.90,
    show_default=True,
    help="The sensitivity the site wants to keep.",
)
@click.option(
    "--apply", "do_apply", is_flag=True, help="Make the recommended threshold the site's."
)
@click.option("--rollback", is_flag=True, help="Go back to the threshold before the last --apply.")
@click.option("--by", help="Who did it, for the audit log [default: cli:<your user name>].")
@json_option
@translate
def calibrate(model, data_dir, target_sensitivity, do_apply, rollback, by, as_json) -> None:
    """Calibrate MODEL's threshold on this site's confirmed cases (decision support)."""
    from appliance.monitoring import calibration

    store, config = _open(data_dir)
    if rollback:
        change = calibration.rollback(store, config, model, _actor(by))
        if as_json:
            print_json({"rolled_back": change})
        else:
            click.echo(
                f"{model}: {change['setting']} back from {change['old']:g} to {change['new']:g}"
            )
        return
    report = calibration.calibrate(store, config, model, target_sensitivity)
    if do_apply:
        report["applied"] = calibration.apply(store, config, report, _actor(by))
    if as_json:
        print_json(report)
        return
    _print_calibration(report)
    if do_apply:
        change = report["applied"]
        click.echo(
            f"applied: {change['setting']} = {change['new']:g} (was {change['old']:g});"
            " new results use it. Undo with --rollback."
        )


@click.command()
@data_dir_option
@click.option(
    "--accept",
    "accept_scope",
    metavar="MODEL",
    help="Accept MODEL's recent results (or `modality-router`) as this site's baseline.",
)
@click.option("--by", help="Who accepted it, for the audit log.")
@json_option
@translate
def monitor(data_dir, accept_scope, by, as_json) -> None:
    """Drift and health: do this site's scores and images still look like the reference?"""
    from appliance.monitoring import monitor as monitoring

    store, config = _open(data_dir)
    if accept_scope:
        accepted = monitoring.accept(store, config, accept_scope, _actor(by))
        click.echo(
            f"{accepted['scope']}: its last {accepted['results']} results are now this"
            " site's baseline.",
            err=as_json,
        )
    report = monitoring.report(store, config)
    if as_json:
        print_json(report)
        return
    for name, facts in report["models"].items():
        if "error" in facts:
            click.echo(f"{name}: {facts['error']}")
            continue
        site, val = facts.get("site") or {}, facts.get("validation") or {}
        line = f"{name} {facts['version']}: last {facts['recent']} results"
        if "positivity" in site or "positivity" in val:
            line += f", flagged {100 * site.get('positivity', val.get('positivity')):.0f}%"
        if val:
            line += f", PSI vs validation {val['psi']:.2f}"
        if site:
            line += f", PSI vs this site's baseline {site['psi']:.2f}"
        if not facts.get("judged", True):
            line += f" (too few to check yet: {config.monitor_min_results} needed)"
        click.echo(line)
    health = report["health"]
    temp, waited = health["temperature_c"], health["oldest_waiting_minutes"]
    click.echo(
        f"disk {health['disk_free_mb']} MB free; temperature "
        + ("not reported" if temp is None else f"{temp:.0f} °C")
        + "; oldest waiting image "
        + ("none" if waited is None else f"{waited:.0f} min")
    )
    for notice in report["notices"]:
        click.echo(f"note: {notice['message']}")
    for warning in report["warnings"]:
        click.echo(f"!! {warning['message']}")
    judged = [f.get("judged", True) for f in report["models"].values() if "error" not in f]
    if not report["warnings"] and not any(judged):
        click.echo("no warnings yet: no model has enough recent results to check")
    elif not report["warnings"]:
        click.echo("no warnings")
    click.echo(report["decision_support"])


COMMANDS = (outcomes, calibrate, monitor)
