"""The ``appliance`` command. ApplianceErrors become one-line messages here, nowhere else."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import click

from appliance import __version__
from appliance.config import SETTINGS, Config, load_config
from appliance.errors import ApplianceError

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    envvar="APPLIANCE_DATA_DIR",
    help="The folder that holds everything the box stores.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def translate_errors(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ApplianceError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def _config(data_dir: Path, **overrides) -> Config:
    config = load_config(data_dir, **overrides)
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if config.log_level.upper() != "DEBUG":
        # pynetdicom logs every PDU at INFO; the box's own log says what matters.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    return config


def _screener(config: Config, required: bool = True):
    """Load the bundled models once; a broken installation is an error when required."""
    from appliance.screening.models import ModelSet
    from appliance.screening.pipeline import Screener

    models = ModelSet(config, log_progress=lambda line: click.echo(line, err=True)).load()
    if required and models.errors:
        problems = "; ".join(f"{name}: {error}" for name, error in models.errors.items())
        raise click.ClickException(f"models not usable ({problems}); run `appliance doctor`")
    return Screener(models, config)


def _print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group()
@click.version_option(__version__, prog_name="appliance")
def main() -> None:
    """Offline screening appliance (decision support, not a diagnosis)."""


@main.command()
@data_dir_option
@click.option("--host", help="Web address to listen on [default: setting host].")
@click.option("--port", type=int, help="Web port [default: setting port].")
@click.option("--dicom-port", type=int, help="DICOM port [default: setting dicom_port].")
@click.option("--dicom-aet", help="DICOM AE title [default: setting dicom_aet].")
@translate_errors
def serve(data_dir, host, port, dicom_port, dicom_aet) -> None:
    """Run the box: web page, DICOM listener, USB and folder import, workers."""
    from appliance.service import Service

    config = _config(data_dir, host=host, port=port, dicom_port=dicom_port, dicom_aet=dicom_aet)
    Service(config).serve_forever()


@main.command()
@data_dir_option
@translate_errors
def migrate(data_dir) -> None:
    """Create or upgrade the database (also done at every start)."""
    from appliance.store.db import Store

    store = Store.open(_config(data_dir).data_dir, migrate=False)
    applied = store.migrate()
    click.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@data_dir_option
@click.option(
    "--process/--no-process",
    default=False,
    help="Also decode the imported images now (otherwise `serve` does it).",
)
@json_option
@translate_errors
def ingest(paths, data_dir, process, as_json) -> None:
    """Import files or folders, the same way a USB stick is imported."""
    from appliance.ingest.importer import Importer
    from appliance.ingest.usb import import_listing, list_importable
    from appliance.store.db import Store
    from appliance.worker import Worker

    config = _config(data_dir)
    store = Store.open(config.data_dir)
    importer = Importer(store, config)
    counts: Counter = Counter()
    outcomes = []
    for path in paths:
        if path.is_dir():
            part, found = import_listing(
                importer, list_importable(path), source="cli", source_detail=str(path)
            )
            counts.update(part)
            outcomes.extend(found)
        else:
            outcome = importer.import_path(path, source="cli")
            counts[outcome.status] += 1
            outcomes.append(outcome)
    if process:
        screener = _screener(config, required=False)
        if screener.ready:
            Worker(store, config, screener, name="cli").drain()
        else:
            click.echo("models not loaded: the images wait for `appliance serve`", err=True)
    if as_json:
        _print_json({"counts": dict(counts), "files": [o.as_dict() for o in outcomes]})
        return
    for outcome in outcomes:
        if outcome.status in ("quarantined", "refused"):
            click.echo(f"{outcome.status}: {outcome.name}: {outcome.reason}")
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo(f"{sum(counts.values())} files: {summary}")


@main.command()
@data_dir_option
@click.option("--limit", default=500, show_default=True)
@json_option
@translate_errors
def studies(data_dir, limit, as_json) -> None:
    """List stored studies and their images, newest first."""
    from appliance.store.db import Store
    from appliance.store.images import list_studies

    rows = list_studies(Store.open(_config(data_dir).data_dir), limit)
    if as_json:
        _print_json(rows)
        return
    for study in rows:
        click.echo(
            f"{study['last_received'][:19]}  {study['patient_id'] or '-':<16} "
            f"{study['patient_name'] or '-':<24} {len(study['images'])} image(s)"
        )
        for image in study["images"]:
            click.echo(
                f"    #{image['id']:<6} {image['modality'] or image['file_format']:<6} "
                f"{image['body_part'] or '':<10} {image['source']:<8} {image['state']}"
            )


@main.command()
@data_dir_option
@json_option
@translate_errors
def quarantine(data_dir, as_json) -> None:
    """List files that were refused, with the reason."""
    from appliance.store.db import Store
    from appliance.store.images import list_quarantine

    rows = list_quarantine(Store.open(_config(data_dir).data_dir))
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        click.echo(
            f"{row['received_at'][:19]}  {row['original_name'] or row['sha256'][:12]}: "
            f"{row['reason']}"
        )


@main.command()
@data_dir_option
@json_option
@translate_errors
def volumes(data_dir, as_json) -> None:
    """List removable volumes mounted now, with what each holds."""
    from appliance.ingest.usb import find_volumes, list_importable

    config = _config(data_dir)
    found = []
    for volume in find_volumes(config.usb_roots, config.usb_require_mountpoint):
        listing = list_importable(volume.path)
        found.append(
            {
                "path": str(volume.path),
                "label": volume.label,
                "importable": len(listing.importable),
                "other_files": [{"path": str(p), "reason": r} for p, r in listing.skipped],
            }
        )
    if as_json:
        _print_json(found)
        return
    for v in found:
        click.echo(f"{v['path']}: {v['importable']} images, {len(v['other_files'])} other files")


@main.command()
@data_dir_option
@click.option("--drain", is_flag=True, help="Process queued jobs until none are left, then exit.")
@translate_errors
def work(data_dir, drain) -> None:
    """Run a worker in the foreground (``serve`` runs its own)."""
    import threading

    from appliance.store.db import Store
    from appliance.worker import Worker

    config = _config(data_dir)
    worker = Worker(Store.open(config.data_dir), config, _screener(config), name="cli")
    if drain:
        click.echo(f"{worker.drain()} job(s) processed")
    else:
        worker.run_forever(threading.Event())


@main.command()
@data_dir_option
@json_option
@translate_errors
def settings(data_dir, as_json) -> None:
    """Show every setting's value in effect (defaults, config.toml, environment)."""
    config = load_config(data_dir)
    values = {s.name: getattr(config, s.name) for s in SETTINGS}
    if as_json:
        _print_json(values)
        return
    for setting in SETTINGS:
        click.echo(f"{setting.name} = {values[setting.name]!r}    # {setting.help}")


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@data_dir_option
@json_option
@translate_errors
def screen(files, data_dir, as_json) -> None:
    """Screen image files directly (no service, nothing stored). Decision support only."""
    from appliance.screening.direct import screen_file

    config = _config(data_dir)
    screener = _screener(config)
    for path in files:
        result = screen_file(screener, path, config.max_image_pixels)
        if as_json:
            click.echo(json.dumps(result, default=str))
            continue
        if result["route"] == "refused":
            click.echo(f"{path}: REFUSED - {result['reason']}")
        else:
            click.echo(
                f"{path}: {result['route']} score {result['score']}/100 "
                f"({result['triage']}) - decision support, not a diagnosis"
            )


@main.command()
@data_dir_option
@click.option("--limit", default=500, show_default=True)
@json_option
@translate_errors
def results(data_dir, limit, as_json) -> None:
    """List stored screening results, newest first."""
    from appliance.store.db import Store
    from appliance.store.results import list_results

    rows = list_results(Store.open(_config(data_dir).data_dir), limit)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        what = (
            f"score {row['score']:>3}/100 {row['triage']:<8}"
            if row["route"] != "refused"
            else f"refused: {row['reason']}"
        )
        click.echo(
            f"{row['created_at'][:19]}  #{row['image_id']:<6} {row['patient_id'] or '-':<14}"
            f" {row['route']:<10} {what}"
        )
    if rows:
        click.echo("Decision support, not a diagnosis: a clinician reviews every result.")


@main.command()
@data_dir_option
@json_option
def doctor(data_dir, as_json) -> None:
    """Check the installation: backends, model bundles, data directory, disk."""
    from appliance.doctor import run_checks

    config = load_config(data_dir)
    report = run_checks(config)
    if as_json:
        _print_json(report)
    else:
        for section in ("backends", "models", "storage", "engines"):
            click.echo(f"[{section}]")
            for item in report[section]:
                mark = "ok " if item["ok"] else "!! "
                click.echo(f"  {mark}{item['name']}: {item['detail']}")
        click.echo("all good" if report["ok"] else "problems found (marked !!)")
    sys.exit(0 if report["ok"] else 1)


def _register_sync_commands() -> None:
    # Imported here, at the bottom: both modules import this one for its shared options.
    from appliance.hub.cli import hub
    from appliance.sync.cli import sync

    main.add_command(sync)
    main.add_command(hub)


_register_sync_commands()
