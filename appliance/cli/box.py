"""Running and checking the box: serve, work, migrate, settings, doctor."""

from __future__ import annotations

import os
import sys

import click

from appliance.cli.options import (
    configure,
    data_dir_option,
    json_option,
    load_screener,
    print_json,
    translate_errors,
)
from appliance.config import SETTINGS, load_config
from appliance.terminal import echo


@click.command()
@data_dir_option
@click.option("--host", help="Web address to listen on [default: setting host].")
@click.option("--port", type=int, help="Web port [default: setting port].")
@click.option("--dicom-port", type=int, help="DICOM port [default: setting dicom_port].")
@click.option("--dicom-aet", help="DICOM AE title [default: setting dicom_aet].")
@translate_errors
def serve(data_dir, host, port, dicom_port, dicom_aet) -> None:
    """Run the box: web page, DICOM listener, USB and folder import, workers."""
    from appliance.service import Service

    os.umask(0o077)  # what the service writes is patient data: the owner's alone
    config = configure(data_dir, host=host, port=port, dicom_port=dicom_port, dicom_aet=dicom_aet)
    Service(config).serve_forever()


@click.command()
@data_dir_option
@translate_errors
def migrate(data_dir) -> None:
    """Create or upgrade the database (also done at every start)."""
    from appliance.store.db import Store

    store = Store.open(configure(data_dir).data_dir, migrate=False)
    applied = store.migrate()
    click.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@click.command()
@data_dir_option
@click.option("--drain", is_flag=True, help="Process queued jobs until none are left, then exit.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Queue the screenings that failed again, with fresh attempts, and say how many;"
    " then exit (a running `serve` screens them), or with --drain screen them now.",
)
@json_option
@translate_errors
def work(data_dir, drain, retry_failed, as_json) -> None:
    """Run a worker in the foreground (``serve`` runs its own)."""
    import threading

    from appliance.store import jobs
    from appliance.store.db import Store
    from appliance.worker import Worker

    if as_json and not (drain or retry_failed):
        raise click.UsageError("--json needs --drain or --retry-failed (they say what they did)")
    config = configure(data_dir)
    store = Store.open(config.data_dir)
    report = {}
    if retry_failed:
        report["requeued"] = jobs.retry_failed(store, "cli")
        if not as_json:
            click.echo(f"{report['requeued']} failed screening(s) queued again")
    if drain or not retry_failed:
        worker = Worker(store, config, load_screener(config), name="cli")
        if not drain:
            worker.run_forever(threading.Event())
            return
        report["processed"] = worker.drain()
        if not as_json:
            click.echo(f"{report['processed']} job(s) processed")
    if as_json:
        print_json(report)


@click.command()
@data_dir_option
@json_option
@translate_errors
def settings(data_dir, as_json) -> None:
    """Show every setting's value in effect (defaults, config.toml, environment)."""
    config = load_config(data_dir)
    values = {s.name: getattr(config, s.name) for s in SETTINGS}
    if as_json:
        print_json(values)
        return
    for setting in SETTINGS:
        click.echo(f"{setting.name} = {values[setting.name]!r}    # {setting.help}")


@click.command()
@data_dir_option
@click.option(
    "--gpu-selftest",
    is_flag=True,
    help="Build every model's TensorRT engine afresh (in a temporary folder), compare it"
    " with ONNX Runtime on the check images and time both: one table. Needs TensorRT and"
    " an NVIDIA GPU (exit 2 names what is missing); minutes on a Jetson.",
)
@json_option
@translate_errors
def doctor(data_dir, gpu_selftest, as_json) -> None:
    """Check the installation: backends, model bundles, data directory, disk."""
    from appliance.doctor import run_checks

    config = load_config(data_dir)
    if gpu_selftest:
        _gpu_selftest(config, as_json)
    report = run_checks(config)
    if as_json:
        print_json(report)
    else:
        for section in ("backends", "models", "storage", "engines"):
            click.echo(f"[{section}]")
            for item in report[section]:
                mark = "ok " if item["ok"] else "!! "
                echo(f"  {mark}{item['name']}: {item['detail']}")
        click.echo("all good" if report["ok"] else "problems found (marked !!)")
    sys.exit(0 if report["ok"] else 1)


def _gpu_selftest(config, as_json: bool) -> None:
    from appliance.doctor import gpu_selftest
    from appliance.inference.engines.selftest import SelftestUnavailableError, table

    try:  # progress on stderr: stdout is the table or the JSON
        report = gpu_selftest(config, log=lambda line: click.echo(line, err=True))
    except SelftestUnavailableError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        print_json(report)
    else:
        for line in table(report).splitlines():
            echo(line)
    sys.exit(0 if report["ok"] else 1)


COMMANDS = (serve, migrate, work, settings, doctor)
