"""``appliance hub training import`` and ``appliance hub training-set``: the programme's
training data gathered from the boxes' exports (``appliance/hub/training.py``,
``appliance/hub/training_set.py``; docs/learning.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from appliance.cli.hub import _connection, _database, database_option, hub
from appliance.cli.options import data_dir_option, json_option, translate_errors
from appliance.terminal import echo


@hub.group()
def training() -> None:
    """Training exports brought from the boxes (appliance training export)."""


@training.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@data_dir_option
@database_option
@json_option
@translate_errors
def import_(folder, data_dir, database_url, as_json) -> None:
    """Check and keep the training exports in FOLDER (one export, or a folder of them):
    signature, every file's sha256, the device's key. A faulty export is refused whole;
    one imported before adds nothing."""
    from appliance.hub import training as training_import

    report = training_import.import_exports(_database(data_dir, database_url), folder)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        echo(
            f"{report['exports']} exports imported: {report['images']} new images, "
            f"{report['labels']} labels"
        )
        for export_id in report["already_imported"]:
            echo(f"{export_id}: already imported, nothing added")
        for refused in report["refused"]:
            echo(f"{refused['export']}: REFUSED, nothing kept: {refused['why']}")
    if report["refused"]:
        raise SystemExit(1)


@hub.command("training-set")
@click.option("--model", required=True, help="The model to gather the set for.")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="A new (or empty) folder: train/, locked_test/ and manifest.json go there.",
)
@data_dir_option
@database_option
@json_option
@translate_errors
def training_set(model, out, data_dir, database_url, as_json) -> None:
    """Assemble the programme's set for MODEL: near-duplicates removed, each patient in
    one split, the locked test split as recorded (never trained on)."""
    from appliance.hub import training_set as sets

    with _connection(data_dir, database_url) as conn:
        report = sets.assemble(conn, model, out)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    train, test = report["train"], report["locked_test"]
    echo(
        f"{model}: train {train['images']} images ({train['positives']} positive), "
        f"locked test {test['images']} images ({test['positives']} positive); "
        f"{report['duplicates_removed']} near-duplicates removed, "
        f"{report['label_conflicts']} label conflicts settled; written to {report['out']}"
    )
