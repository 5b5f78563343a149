"""``appliance hub bad-records`` and ``appliance hub quarantine``: the stored records
the hub's readers could not render, listed for the admin, quarantined and released
(``appliance/hub/bad_records.py``)."""

from __future__ import annotations

import json

import click

from appliance.cli.hub import _connection, database_option, hub
from appliance.cli.options import data_dir_option, json_option, translate_errors
from appliance.terminal import echo


@hub.command("bad-records")
@data_dir_option
@database_option
@click.option("--device", "device_id", default=None, help="Only this box's records.")
@click.option(
    "--check",
    is_flag=True,
    help="First check every record of --device now (else: those the readers met).",
)
@click.option("--quarantined", is_flag=True, help="List the records in quarantine instead.")
@json_option
@translate_errors
def bad_records_(data_dir, database_url, device_id, check, quarantined, as_json) -> None:
    """List stored records that FHIR, the pusher or the dashboard could not render."""
    from appliance.hub import bad_records

    if check and not device_id:
        raise click.UsageError("--check needs --device")
    with _connection(data_dir, database_url) as conn:
        done = None
        if check:
            try:
                done = bad_records.scan(conn, device_id)
            except LookupError as exc:
                raise click.ClickException(str(exc)) from exc
        rows = (
            bad_records.quarantined(conn, device_id)
            if quarantined
            else bad_records.listed(conn, device_id)
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if done is not None:
        echo(f"checked {done['checked']} records of {device_id}: {done['bad']} cannot be shown")
    for row in rows:
        why = row["reason"]
        echo(f"{row['device_id']}  {row['site']}  {row['entry_id']}  {row['kind']}  {why}")
    if not rows:
        echo("none in quarantine" if quarantined else "no bad records")


@hub.command()
@click.argument("entries", nargs=-1, required=True)
@click.option("--device", "device_id", required=True, help="The box the records came from.")
@click.option("--reason", default="", help="Why (kept with the record and in the log).")
@click.option("--release", is_flag=True, help="Put the records back instead.")
@click.option(
    "--by", "actor", default=None, help="Who does this, for the log [default: cli:$USER]."
)
@data_dir_option
@database_option
@json_option
@translate_errors
def quarantine(entries, device_id, reason, release, actor, data_dir, database_url, as_json):
    """Take ENTRIES of a box out of FHIR, pushes, dashboard figures and exports (kept
    for audit), or put them back with --release."""
    import getpass

    from appliance.hub import bad_records

    actor = actor or f"cli:{getpass.getuser()}"
    with _connection(data_dir, database_url) as conn:
        if conn.one("SELECT id FROM devices WHERE id = ?", (device_id,)) is None:
            raise click.ClickException(f"no device {device_id}")
        try:
            if release:
                done = bad_records.release(conn, device_id, entries, actor)
            else:
                done = bad_records.quarantine(conn, device_id, entries, actor, reason)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(done, indent=2))
    else:
        what = "released" if release else "quarantined"
        for entry_id in done[what]:
            echo(f"{what} {device_id} {entry_id}")
        for entry_id in done["missing"]:
            echo(f"not found: {device_id} {entry_id}")
    if done["missing"]:
        raise SystemExit(1)
