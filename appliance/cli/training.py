"""``appliance training export``: confirmed images, with consent, for improving the models."""

from __future__ import annotations

import getpass
import hashlib
from datetime import date
from pathlib import Path

import click

from appliance.cli.options import configure, data_dir_option, json_option, print_json
from appliance.cli.options import translate_errors as translate


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _since(_ctx, _param, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter("write the date as YYYY-MM-DD") from exc


def _identity(data_dir: Path, site_name: str) -> tuple[str, str]:
    """(device id, site): the hub's names for this box where it is enrolled, else one
    made from its export key (stable for the box) and the configured site name."""
    from appliance.errors import NotEnrolledError
    from appliance.sync.identity import load_identity
    from appliance.training.export import KEY_FILE
    from appliance.wire.training_export import export_key, public_key_text

    try:
        identity = load_identity(data_dir)
        return identity.device_id, identity.site or site_name
    except NotEnrolledError:
        public = public_key_text(export_key(data_dir / KEY_FILE))
        return f"box-{hashlib.sha256(public.encode()).hexdigest()[:16]}", site_name


@click.group()
def training() -> None:
    """Help improve the models with this box's confirmed cases (with consent only)."""


@training.command("export")
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the export into (a USB stick, say): DIR/<device>-<time>/.",
)
@click.option("--model", default=None, help="Only images this model scored.")
@click.option(
    "--since", default=None, callback=_since, help="Only images taken on or after YYYY-MM-DD."
)
@data_dir_option
@json_option
@translate
def export_command(to, model, since, data_dir, as_json) -> None:
    """Write de-identified images (PNG), labels.csv and a signed manifest.

    Only images the site's training_consent allows (never: none; ask: the patient said
    yes on the study page; always: all) and that have a confirmatory outcome or, as a
    weaker label, a clinician's review. Nothing is half-written: a full or read-only
    disk leaves nothing behind.
    """
    from appliance.store.db import Store
    from appliance.training.export import export

    config = configure(data_dir)
    store = Store.open(config.data_dir)
    device_id, site = _identity(config.data_dir, config.site_name)
    report = export(
        store, config, to, device_id=device_id, site=site, model=model, since=since,
        actor=_actor(),
    )
    if as_json:
        print_json(report.as_dict())
        return
    if report.to is None:
        click.echo(
            f"Nothing exported (consent policy: {config.training_consent}):"
            f" {report.skipped_no_consent} images without consent,"
            f" {report.skipped_no_outcome} without an outcome or review."
        )
        return
    click.echo(
        f"{report.images} images exported to {report.to} ({report.labelled} with a"
        f" confirmatory outcome, {report.weak} with a review only);"
        f" left out: {report.skipped_no_consent} without consent,"
        f" {report.skipped_no_outcome} without an outcome or review."
    )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@training.command("send")
@click.option("--model", default=None, help="Only images this model scored.")
@click.option(
    "--since", default=None, callback=_since, help="Only images taken on or after YYYY-MM-DD."
)
@click.option(
    "--queue",
    is_flag=True,
    help="Only export now: the sync worker sends it in its next passes (no link needed now).",
)
@data_dir_option
@json_option
@translate
def send_command(model, since, queue, data_dir, as_json) -> None:
    """Export as `training export` does, then send the exports to the hub with sync.

    Only where the site allows it (the training_sync setting) and the box is enrolled.
    Files go in resumable chunks: run it again after a dropped link and it goes on where
    it stopped (an unfinished send is finished before anything new is exported). Exports
    the hub imported are deleted here; one it refuses is kept in DATA_DIR/training/refused/
    with the reason. The running sync worker also sends what waits, by itself, in each
    pass (after the results), and goes on with a send that stopped. Both keep to
    sync_max_kbps.
    """
    from appliance.store.db import Store
    from appliance.sync.client import HubClient
    from appliance.sync.identity import load_identity
    from appliance.sync.training_send import OUTGOING, TrainingSender
    from appliance.training.export import export

    config = configure(data_dir)
    if not config.training_sync:
        raise click.ClickException(
            "training_sync is off: this site sends training exports on a USB stick only"
            " (appliance training export --to DIR). Nothing was sent."
        )
    identity = load_identity(config.data_dir)
    client = HubClient(
        config.sync_hub_url or identity.hub_url, identity.token,
        ca_bundle=config.sync_ca_bundle, timeout=config.sync_timeout_seconds, keep_alive=True,
    )  # fmt: skip
    sender = TrainingSender(client, config)
    exported = None
    if queue or not sender.pending():  # an unfinished send is finished first, nothing added to it
        exported = export(
            Store.open(config.data_dir), config, config.data_dir / OUTGOING,
            device_id=identity.device_id, site=identity.site or config.site_name,
            model=model, since=since, actor=_actor(),
        ).as_dict()  # fmt: skip
    if queue:
        client.close()
        waiting = len(sender.pending())
        if as_json:
            print_json({"exported": exported, "waiting": waiting})
        else:
            click.echo(f"{exported['images']} images exported; {waiting} exports wait for"
                       " the sync worker, which sends them in its next passes")  # fmt: skip
        return
    try:
        report = sender.send_all()
    finally:
        client.close()
    report = {"exported": exported, **report}
    if as_json:
        print_json(report)
    else:
        made = "resumed an unfinished send" if exported is None else (
            f"{exported['images']} images exported"
        )
        click.echo(
            f"{made}; {report['exports']} exports imported by the hub ({report['images']}"
            f" new images, {report['labels']} labels), {report['files_sent']} files sent,"
            f" {report['files_held']} already there"
        )
        for export_id in report["already_imported"]:
            click.echo(f"{export_id}: already imported, nothing added")
    for refused in report["refused"]:
        click.echo(f"{refused['export']}: REFUSED by the hub: {refused['why']}", err=True)
    if report["refused"]:
        raise SystemExit(1)


COMMANDS = (training,)
