"""``appliance sync ...``: enrol with a hub, sync now or forever, status, data-mule export."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import click

from appliance.cli.options import configure, data_dir_option, json_option, translate_errors
from appliance.terminal import echo


@click.group(invoke_without_command=True)
@data_dir_option
@click.option("--once", is_flag=True, help="One pass: send what is pending, then exit.")
@click.pass_context
@translate_errors
def sync(ctx, data_dir, once) -> None:
    """Send results and reviews to the hub (forever, or --once)."""
    if ctx.invoked_subcommand is not None:
        return
    from appliance.store.db import Store
    from appliance.sync.worker import SyncWorker

    config = configure(data_dir)
    store = Store.open(config.data_dir)
    worker = SyncWorker(store, config)
    if once:
        report = worker.sync_once()
        click.echo(
            f"sent {report['sent']}, acknowledged {report['acked'] + report['confirmed']},"
            f" images {report['images']}"
        )
        return
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker.run_forever(stop)


@sync.command()
@data_dir_option
@click.option("--hub", "hub_url", required=True, help="The hub's base URL, e.g. https://hub.org")
@click.option("--code", required=True, help="The one-time code from `appliance hub enrol-code`.")
@click.option("--name", default=None, help="This box's name on the hub [default: host name].")
@translate_errors
def enrol(data_dir, hub_url, code, name) -> None:
    """Enrol this box with a hub: stores the device token (0600) and the hub URL."""
    from appliance.sync.enrolment import enrol as enrol_box  # the System page's too
    from appliance.sync.identity import DEVICE_FILE

    config = configure(data_dir)
    identity = enrol_box(config, hub_url, code, name)
    path = config.data_dir / DEVICE_FILE
    echo(f"enrolled as {identity.device_id} for site {identity.site} (token in {path})")


@sync.command()
@data_dir_option
@json_option
@translate_errors
def status(data_dir, as_json) -> None:
    """What is pending, acknowledged, and when the hub was last reached."""
    from appliance.store.db import Store
    from appliance.sync.worker import sync_status

    config = configure(data_dir)
    state = sync_status(Store.open(config.data_dir), config)
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    if not state["hub_url"]:
        click.echo("sync not set up (no sync_hub_url): every result stays on the box")
    else:
        echo(f"hub {state['hub_url']} as {state['device_id'] or 'NOT ENROLLED'}")
    click.echo(
        f"results: {state['result_pending']} pending, {state['result_acked']} acknowledged;"
        f" reviews: {state['review_pending']} pending, {state['review_acked']} acknowledged"
    )
    click.echo(f"last success: {state['last_success_at'] or 'never'}")
    if state["last_error"]:
        echo(f"last error: {state['last_error']}")
    if state["models_error"]:
        echo(f"model bundles: {state['models_error']}")


@sync.command()
@data_dir_option
@click.option(
    "--to", "to", required=True, type=click.Path(path_type=Path), help="File or folder to write."
)
@translate_errors
def export(data_dir, to) -> None:
    """Write a signed bundle of everything the hub has not acknowledged (USB data-mule)."""
    from appliance.store.db import Store
    from appliance.sync.mule import export_bundle

    config = configure(data_dir)
    report = export_bundle(Store.open(config.data_dir), config, to)
    click.echo(f"{report['entries']} entries written to {report['path']}")


@sync.command()
@click.argument("receipts", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@data_dir_option
@json_option
@translate_errors
def receipt(receipts, data_dir, as_json) -> None:
    """Read the hub's receipts for exported bundles (written by `appliance hub import
    --receipt-to`): what the hub holds is marked acknowledged, never sent again."""
    from appliance.store.db import Store
    from appliance.sync.mule import apply_receipt

    config = configure(data_dir)
    store = Store.open(config.data_dir)
    reports = [apply_receipt(store, config, path) for path in receipts]
    if as_json:
        click.echo(json.dumps(reports, indent=2))
        return
    for report in reports:
        echo(
            f"{report['path']}: the hub holds {report['entries']} entries "
            f"({report['acked']} newly acknowledged)"
        )
