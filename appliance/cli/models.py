"""``appliance models``: sign bundles (programme side), trust keys, install, compare,
activate and roll back (box side). Installing and activating are the box admin's: the
command line is the admin's console."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.cli.options import (
    configure,
    data_dir_option,
    json_option,
    print_json,
    translate_errors,
)
from appliance.terminal import echo


@click.group()
def models() -> None:
    """Model bundles over their life: pack, trust, install, compare, activate, roll back."""


@models.command()
@click.argument("key", type=click.Path(dir_okay=False, path_type=Path))
@translate_errors
def keygen(key) -> None:
    """Make a programme signing key: KEY (private, keep it safe) and KEY.pub."""
    from appliance.wire.model_signature import key_id, new_key

    if key.exists():
        raise click.ClickException(f"{key} exists: not overwritten")
    public = new_key(key)
    click.echo(f"private key {key}; public key {key}.pub (id {key_id(public)})")
    click.echo(public)


@models.command()
@click.argument("bundle_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--key",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The programme's private signing key (PEM).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The signed bundle file to write (.tar, or .tar.gz for gzip).",
)
@json_option
@translate_errors
def pack(bundle_dir, key, out, as_json) -> None:
    """Verify BUNDLE_DIR and write it with a signature over its manifest as one file."""
    from appliance.lifecycle.pack import pack as pack_bundle

    done = pack_bundle(bundle_dir, key, out)
    if as_json:
        print_json(done)
    else:
        click.echo(f"{done['name']} {done['version']} signed by {done['key_id'][:16]}… -> {out}")


@models.command()
@click.argument("pubkey")
@data_dir_option
@translate_errors
def trust(pubkey, data_dir) -> None:
    """Trust a programme key: PUBKEY is its base64 text or a file holding it (or PEM)."""
    from appliance.lifecycle.keys import trust as trust_key
    from appliance.store.db import Store, audit

    path = Path(pubkey)
    text = path.read_text(encoding="utf-8") if path.is_file() else pubkey
    config = configure(data_dir)
    kid = trust_key(config.data_dir, text)
    store = Store.open(config.data_dir)
    with store.write() as conn:
        audit(conn, "cli", "model.key_trusted", f"key:{kid}")
    click.echo(f"trusted key {kid}")


@models.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@data_dir_option
@json_option
@translate_errors
def install(file, data_dir, as_json) -> None:
    """Verify a signed bundle FILE and install it in shadow (refused with the reason)."""
    from appliance.lifecycle.install import install as install_file
    from appliance.store.db import Store

    config = configure(data_dir)
    done = install_file(Store.open(config.data_dir), config, file)
    if as_json:
        print_json(done)
    else:
        click.echo(
            f"{done['name']} {done['version']} installed, in shadow (key {done['key_id'][:16]}…)"
        )


@models.command("list")
@data_dir_option
@json_option
@translate_errors
def list_versions(data_dir, as_json) -> None:
    """Every version: active, shadow, installed or refused, and its signing key."""
    from appliance.lifecycle.activation import listing
    from appliance.store.db import Store

    config = configure(data_dir)
    found = listing(Store.open(config.data_dir), config)
    if as_json:
        print_json(found)
        return
    for row in found:
        extra = f"  ({row['reason']})" if row.get("reason") else ""
        echo(
            f"{row['name']:22} {row['version']:10} {row['state']:9}"
            f" key {str(row['key_id'])[:16]}{extra}"
        )


@models.command()
@click.argument("name")
@click.option("--version", help="Only this shadow version.")
@data_dir_option
@json_option
@translate_errors
def compare(name, version, data_dir, as_json) -> None:
    """Shadow against active: agreement, and sensitivity/specificity where known."""
    from appliance.lifecycle.compare import compare as compare_versions
    from appliance.store.db import Store

    config = configure(data_dir)
    reports = compare_versions(Store.open(config.data_dir).conn(), name, version)
    if as_json:
        print_json(reports)
        return
    if not reports:
        click.echo(f"no shadow results for {name} yet")
    for r in reports:
        click.echo(
            f"{name} {r['shadow_version']} (shadow) vs {', '.join(r['active_versions'])}: "
            f"{r['images']} image(s), route agreement {r['route_agreement']}, "
            f"call agreement {r['call_agreement']} on {r['scored']}, "
            f"mean |score difference| {r['mean_abs_score_difference']}"
        )
        if r["with_reference"]:
            for side in ("active", "shadow"):
                rates = r[side]
                click.echo(
                    f"  {side}: sensitivity {rates['sensitivity']} ({rates['positives']} positive),"
                    f" specificity {rates['specificity']} ({rates['negatives']} negative)"
                )
        else:
            click.echo("  no confirmed outcomes or reviews for these images yet")


@models.command()
@click.argument("name")
@click.argument("version")
@data_dir_option
@json_option
@translate_errors
def activate(name, version, data_dir, as_json) -> None:
    """Make VERSION of NAME the one that screens (a running box switches between jobs)."""
    from appliance.lifecycle.activation import activate as activate_version
    from appliance.store.db import Store

    config = configure(data_dir)
    done = activate_version(Store.open(config.data_dir), config, name, version)
    if as_json:
        print_json(done)
    else:
        click.echo(f"{name} {version} active (was {done['previous']})")


@models.command()
@click.argument("name")
@data_dir_option
@json_option
@translate_errors
def rollback(name, data_dir, as_json) -> None:
    """Return NAME to the version that was active before."""
    from appliance.lifecycle.activation import rollback as rollback_version
    from appliance.store.db import Store

    config = configure(data_dir)
    done = rollback_version(Store.open(config.data_dir), config, name)
    if as_json:
        print_json(done)
    else:
        click.echo(f"{name} back to {done['version']} (was {done['previous']})")
