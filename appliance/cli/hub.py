"""``appliance hub ...``: run the hub and administer it (codes, devices, admins, imports)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from appliance.cli.options import configure, data_dir_option, json_option, translate_errors
from appliance.hub.db import Connection, HubDatabase
from appliance.terminal import echo

database_option = click.option(
    "--database-url",
    default=None,
    help="postgresql://user@host/db [default: setting hub_database_url, else SQLite hub.db].",
)


def _database(data_dir: Path, database_url: str | None) -> HubDatabase:
    config = configure(data_dir)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    database = HubDatabase(config.data_dir, database_url or config.hub_database_url)
    database.migrate()
    return database


@contextmanager
def _connection(data_dir: Path, database_url: str | None) -> Iterator[Connection]:
    """One connection to the (migrated) hub database, closed however the command ends."""
    conn = _database(data_dir, database_url).connect()
    try:
        yield conn
    finally:
        conn.close()


@click.group()
def hub() -> None:
    """The central hub that boxes sync to (run it on a server, not on a box)."""


@hub.command()
@data_dir_option
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8090, show_default=True)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes: above 1, gunicorn (pre-fork, Linux) serves; 1: waitress.",
)
@click.option("--threads", type=int, default=8, show_default=True, help="Threads per worker.")
@click.option(
    "--access-log",
    default="",
    help="With --workers: log each request, with its milliseconds, here ('-': stderr).",
)
@click.option(
    "--shed-after-ms",
    type=click.FloatRange(min=0),
    default=None,
    help="With --workers: a box's request that waited longer than this is told to come"
    " back later (503, Retry-After) [default: hub_shed_after_ms, 50; 0: never].",
)
@click.option("--test-write-delay", type=float, default=0.0, hidden=True)
@translate_errors
def serve(
    data_dir,
    database_url,
    host,
    port,
    workers,
    threads,
    access_log,
    shed_after_ms,
    test_write_delay,
) -> None:
    """Serve the hub's device API and dashboard (put HTTPS in front of it).

    Pending schema migrations are applied first; a newer database is refused."""
    from appliance.hub import create_app, server, session_key

    config = configure(data_dir)
    url = database_url or config.hub_database_url
    settings = {
        "HUB_TEST_WRITE_DELAY": test_write_delay,
        "HUB_TRUSTED_PROXIES": config.hub_trusted_proxies,
    }
    database = HubDatabase(config.data_dir, url)
    if workers > 1 and server.available():
        database.migrate()
        session_key(config.data_dir)  # made once, before the workers that share it
        _push_fhir(config, url, in_process=False)  # its own process: the master forks

        def ready() -> None:
            click.echo(
                f"hub ready: http://{host}:{port} ({database.describe()},"
                f" {workers} workers x {threads} threads)",
                err=True,
            )

        server.serve_workers(
            lambda: create_app(config.data_dir, url, settings, pool_size=threads),
            database,
            host=host,
            port=port,
            workers=workers,
            threads=threads,
            access_log=access_log,
            shed_after_ms=config.hub_shed_after_ms if shed_after_ms is None else shed_after_ms,
            on_ready=ready,
        )
        return
    if workers > 1:
        click.echo("gunicorn is not installed: serving with one waitress process", err=True)
    app = create_app(config.data_dir, url, settings, pool_size=threads)
    _push_fhir(config, url, in_process=True)
    _serve_waitress(app, host, port, threads)


def _push_fhir(config, url: str | None, *, in_process: bool) -> None:
    """Push reports to ``hub_fhir_server_url`` every interval, beside the server: a thread
    of the one waitress process, or a process of its own before gunicorn forks workers."""
    if not config.hub_fhir_server_url:
        return
    import multiprocessing
    import threading

    target = threading.Thread if in_process else multiprocessing.Process
    target(target=_run_fhir_pusher, args=(config, url), daemon=True).start()


def _run_fhir_pusher(config, url: str | None) -> None:
    import threading

    from appliance.hub.fhir.push import FhirPusher

    database = HubDatabase(config.data_dir, url)  # its own connections, in this process
    pusher = FhirPusher(
        database,
        config.hub_fhir_server_url,
        config.data_dir,
        settle_seconds=config.hub_fhir_push_settle_seconds,
    )
    pusher.run_forever(threading.Event(), config.hub_fhir_push_interval_seconds)


def _serve_waitress(app, host: str, port: int, threads: int) -> None:
    from appliance.http_server import create_server

    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="appliance-hub",
        max_request_body_size=app.config["MAX_CONTENT_LENGTH"],
        # X-Forwarded-* reach the app, which believes them only from hub_trusted_proxies
        # (hub/proxy.py: a list of networks, where waitress's own takes one address).
        clear_untrusted_proxy_headers=False,
    )
    database = app.extensions["hub_database"]
    click.echo(f"hub ready: http://{host}:{port} ({database.describe()})", err=True)
    server.run()


@hub.command()
@data_dir_option
@database_option
@translate_errors
def migrate(data_dir, database_url) -> None:
    """Bring the hub's database schema up to date (again: nothing to do)."""
    from appliance.hub.migrations import LATEST

    config = configure(data_dir)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    database = HubDatabase(config.data_dir, database_url or config.hub_database_url)
    applied = database.migrate()
    if applied:
        click.echo(f"{database.describe()}: applied {', '.join(map(str, applied))}")
    else:
        click.echo(f"{database.describe()}: already at version {LATEST}")


@hub.command("enrol-code")
@data_dir_option
@database_option
@click.option("--site", required=True, help="The clinic the new box belongs to.")
@click.option("--days", type=int, default=7, show_default=True, help="How long the code works.")
@translate_errors
def enrol_code(data_dir, database_url, site, days) -> None:
    """Print a one-time code that enrols one box for SITE."""
    from appliance.hub import records

    with _connection(data_dir, database_url) as conn:
        click.echo(records.create_enrolment_code(conn, site, days))


@hub.command()
@data_dir_option
@database_option
@json_option
@translate_errors
def devices(data_dir, database_url, as_json) -> None:
    """List enrolled boxes: site, last seen, revoked."""
    from appliance.hub import records

    with _connection(data_dir, database_url) as conn:
        rows = records.list_devices(conn)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        state = "revoked" if row["revoked_at"] else "active"
        echo(
            f"{row['id']}  {row['site']}  {row['name']}  {state}  last seen "
            f"{row['last_seen_at'] or 'never'}"
        )


@hub.command()
@click.argument("device_id")
@data_dir_option
@database_option
@translate_errors
def revoke(device_id, data_dir, database_url) -> None:
    """Refuse DEVICE_ID from now on (its token gets 403)."""
    from appliance.hub import records

    with _connection(data_dir, database_url) as conn:
        if not records.revoke_device(conn, device_id):
            raise click.ClickException(f"no device {device_id}")
    click.echo(f"revoked {device_id}")


@hub.command("create-admin")
@data_dir_option
@database_option
@click.option("--username", default="admin", show_default=True)
@click.password_option(help="At least 10 characters (asked for when not given).")
@translate_errors
def create_admin(data_dir, database_url, username, password) -> None:
    """Create a dashboard login (or set its password)."""
    from appliance.hub import records

    with _connection(data_dir, database_url) as conn:
        records.set_admin(conn, username, password)
    click.echo(f"hub admin {username} set")


@hub.command("fhir-push")
@data_dir_option
@database_option
@translate_errors
def fhir_push(data_dir, database_url) -> None:
    """Push new or changed reports to the FHIR server (hub_fhir_server_url) once."""
    from appliance.hub.fhir.push import FhirPusher, PushError

    config = configure(data_dir)
    if not config.hub_fhir_server_url:
        raise click.ClickException("no FHIR server configured (hub_fhir_server_url)")
    pusher = FhirPusher(
        _database(data_dir, database_url),
        config.hub_fhir_server_url,
        config.data_dir,
        settle_seconds=config.hub_fhir_push_settle_seconds,
    )
    try:
        report = pusher.push_once()
    except PushError as exc:
        raise click.ClickException(str(exc)) from exc
    skipped = (
        f", {report['skipped']} skipped (see `appliance hub bad-records`)"
        if report["skipped"]
        else ""
    )
    click.echo(f"{report['pushed']} reports pushed, {report['unchanged']} unchanged{skipped}")


@hub.command("import")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@data_dir_option
@database_option
@click.option(
    "--receipt-to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write a receipt per bundle here (e.g. the stick), for the box to read.",
)
@json_option
@translate_errors
def import_(bundles, data_dir, database_url, receipt_to, as_json) -> None:
    """Import data-mule bundles written by `appliance sync export` (again: no change)."""
    from appliance.hub import records

    database = _database(data_dir, database_url)
    reports = [records.import_bundle(database, path, receipt_to) for path in bundles]
    if as_json:
        click.echo(json.dumps(reports, indent=2))
        return
    for path, report in zip(bundles, reports, strict=True):
        what = "already imported: nothing changed" if report["replay"] else "imported"
        echo(f"{path}: {report['entries']} entries {what}")


# -- model distribution (hub/distribution.py) ------------------------------------------
@hub.command("trust-model-key")
@click.argument("pubkey")
@data_dir_option
@database_option
@translate_errors
def trust_model_key(pubkey, data_dir, database_url) -> None:
    """Trust a programme key for `hub publish`: PUBKEY is its base64 text or a file."""
    from appliance.hub import distribution

    path = Path(pubkey)
    text = path.read_text(encoding="utf-8") if path.is_file() else pubkey
    with _connection(data_dir, database_url) as conn:
        kid = distribution.trust_key(conn, text)
    click.echo(f"trusted key {kid}")


@hub.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@data_dir_option
@database_option
@json_option
@translate_errors
def publish(file, data_dir, database_url, as_json) -> None:
    """Verify a signed bundle FILE (trusted key, every sha256) and keep it for boxes."""
    from appliance.hub import distribution

    database = _database(data_dir, database_url)
    conn = database.connect()
    try:
        done = distribution.publish(conn, database.data_dir, file)
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps(done, indent=2))
        return
    what = "already published" if done["already"] else "published"
    click.echo(f"{done['name']} {done['version']} {what} (sha256 {done['sha256'][:16]}…)")


@hub.command()
@click.argument("name")
@click.argument("version")
@click.option("--devices", default="", help="Comma-separated device ids (stage these first).")
@click.option("--sites", default="", help="Comma-separated site names.")
@click.option("--all", "everyone", is_flag=True, help="Every box.")
@click.option("--activate", is_flag=True, help="Boxes make it active once installed.")
@data_dir_option
@database_option
@translate_errors
def rollout(name, version, devices, sites, everyone, activate, data_dir, database_url) -> None:
    """Give a published VERSION of NAME to chosen boxes, sites, or --all (in shadow
    unless --activate; run again with --activate to switch those boxes over)."""
    from appliance.hub import distribution

    targets = [f"device:{d.strip()}" for d in devices.split(",") if d.strip()]
    targets += [f"site:{s.strip()}" for s in sites.split(",") if s.strip()]
    targets += ["all"] if everyone else []
    if not targets:
        raise click.UsageError("name the boxes: --devices, --sites or --all")
    with _connection(data_dir, database_url) as conn:
        distribution.rollout(conn, name, version, targets, activate)
    state = "to activate" if activate else "in shadow"
    click.echo(f"{name} {version} rolled out {state} to {', '.join(targets)}")


@hub.command()
@data_dir_option
@database_option
@json_option
@translate_errors
def bundles(data_dir, database_url, as_json) -> None:
    """List published model bundles and who they are rolled out to."""
    from appliance.hub import distribution

    with _connection(data_dir, database_url) as conn:
        rows = distribution.published(conn)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        targets = ", ".join(
            r["target"] + (" (activate)" if r["activate"] else "") for r in row["rollouts"]
        )
        targets = targets or "not rolled out"
        echo(f"{row['name']} {row['version']}  {row['sha256'][:16]}…  {targets}")


from appliance.cli import hub_records, hub_training  # noqa: E402, F401 - their commands join ``hub``
