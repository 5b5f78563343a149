"""``appliance pacs ...``: DICOM results to PACS (status, send now)."""

from __future__ import annotations

import json

import click

from appliance.cli.options import configure, data_dir_option, json_option, translate_errors
from appliance.terminal import echo


@click.group()
def pacs() -> None:
    """DICOM results (SR and Secondary Capture) to the configured PACS."""


@pacs.command()
@data_dir_option
@json_option
@translate_errors
def status(data_dir, as_json) -> None:
    """Each PACS: pending, failed and sent results, last success and error, next try."""
    from appliance.pacs.status import pacs_status
    from appliance.pacs.targets import register
    from appliance.store.db import Store

    config = configure(data_dir)
    store = Store.open(config.data_dir)
    register(store, config)
    state = pacs_status(store, config)
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    wl = state["worklist"]
    if wl["address"]:
        echo(
            f"worklist {wl['address']}: {wl['entries']} procedures at the last answer"
            f" ({wl['last_success_at'] or 'never'})"
            + (f"; last error: {wl['last_error']}" if wl["last_error"] else "")
        )
    if not state["destinations"]:
        click.echo("no PACS configured (pacs_destinations): results stay on the box")
    for dest in state["destinations"]:
        where = "" if dest["configured"] else " (no longer configured)"
        echo(
            f"{dest['address']} [{'+'.join(dest['objects'])}]{where}: {dest['pending']} pending,"
            f" {dest['failed']} failed, {dest['sent']} sent;"
            f" last success {dest['last_success_at'] or 'never'}"
        )
        if dest["last_error"]:
            echo(f"  last error: {dest['last_error']}")
        if dest["next_attempt_in_s"]:
            click.echo(f"  next try in {dest['next_attempt_in_s']} s")


@pacs.command()
@data_dir_option
@click.option(
    "--all-pending",
    is_flag=True,
    required=True,
    help="Send everything pending now, refused results and waiting PACS included.",
)
@translate_errors
def send(data_dir, all_pending) -> None:
    """Send every pending result to every configured PACS now (one pass)."""
    from appliance.pacs.sender import PacsSender
    from appliance.pacs.targets import register
    from appliance.store import pacs_outbox
    from appliance.store.db import Store

    config = configure(data_dir)
    store = Store.open(config.data_dir)
    if not register(store, config):
        raise click.ClickException("no PACS configured (pacs_destinations)")
    pending = pacs_outbox.retry_everything(store)
    report = PacsSender(store, config).send_once(ignore_backoff=True)
    click.echo(
        f"{pending} pending: {report['sent']} sent, {report['refused']} refused,"
        f" {report['unreachable']} PACS unreachable"
    )
    if report["refused"] or report["unreachable"]:
        raise SystemExit(1)
