"""Getting images in and reading what is stored: ingest, studies, quarantine, volumes,
screen, results."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

from appliance.cli.options import (
    configure,
    data_dir_option,
    json_option,
    load_screener,
    print_json,
    translate_errors,
)
from appliance.terminal import echo


@click.command()
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

    config = configure(data_dir)
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
        screener = load_screener(config, required=False)
        if screener.ready:
            Worker(store, config, screener, name="cli").drain()
        else:
            click.echo("models not loaded: the images wait for `appliance serve`", err=True)
    if as_json:
        print_json({"counts": dict(counts), "files": [o.as_dict() for o in outcomes]})
        return
    for outcome in outcomes:
        if outcome.status in ("quarantined", "refused"):
            echo(f"{outcome.status}: {outcome.name}: {outcome.reason}")
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo(f"{sum(counts.values())} files: {summary}")


@click.command()
@data_dir_option
@click.option("--limit", default=500, show_default=True)
@json_option
@translate_errors
def studies(data_dir, limit, as_json) -> None:
    """List stored studies and their images, newest first."""
    from appliance.store.db import Store
    from appliance.store.images import list_studies

    rows = list_studies(Store.open(configure(data_dir).data_dir), limit)
    if as_json:
        print_json(rows)
        return
    for study in rows:
        patient_id = study["patient_id"] or study.get("entered_patient_id")
        patient_name = study["patient_name"] or study.get("entered_patient_name")
        # No patient (a camera card's photo): the file's own name tells studies apart.
        who = patient_id or _file_name(study["images"][0] if study["images"] else {})
        echo(
            f"{study['last_received'][:19]}  {who:<16} "
            f"{patient_name or '-':<24} {len(study['images'])} image(s)"
        )
        for image in study["images"]:
            echo(
                f"    #{image['id']:<6} {image['modality'] or image['file_format']:<6} "
                f"{image['body_part'] or '':<10} {image['source']:<8} {image['state']}"
                + (f"  {image['original_name']}" if image.get("original_name") else "")
                + (
                    " (adult or child? choose on its page)"
                    if image.get("waiting_for") == "population"
                    else ""
                )
            )


def _file_name(row: dict) -> str:
    """``file:NAME`` for a row without a patient (never mistaken for a patient ID)."""
    return f"file:{row['original_name']}" if row.get("original_name") else "-"


@click.command()
@data_dir_option
@json_option
@translate_errors
def quarantine(data_dir, as_json) -> None:
    """List files that were refused, with the reason."""
    from appliance.store.db import Store
    from appliance.store.images import list_quarantine

    rows = list_quarantine(Store.open(configure(data_dir).data_dir))
    if as_json:
        print_json(rows)
        return
    for row in rows:
        echo(
            f"{row['received_at'][:19]}  {row['original_name'] or row['sha256'][:12]}: "
            f"{row['reason']}"
        )


@click.command()
@data_dir_option
@json_option
@translate_errors
def volumes(data_dir, as_json) -> None:
    """List removable volumes mounted now, with what each holds."""
    from appliance.ingest.usb import find_volumes, list_importable

    config = configure(data_dir)
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
        print_json(found)
        return
    if not found:
        echo(f"no removable volumes (looked under {', '.join(map(str, config.usb_roots))})")
    for v in found:
        echo(f"{v['path']}: {v['importable']} images, {len(v['other_files'])} other files")


@click.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@data_dir_option
@click.option(
    "--population",
    type=click.Choice(["adult", "child"]),
    default=None,
    help="Screen chest X-rays that give no patient age (JPEG, PNG, a DICOM without"
    " PatientAge or BirthDate) as adult or child. A DICOM that gives an age is always"
    " screened by its age. Without this flag the data dir's chest_population setting"
    " decides; where it is `ask`, such an X-ray is reported as needing a choice.",
)
@click.option(
    "--heatmap-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write each scored image's heatmap to DIR/<file name>.heatmap.png: 8-bit grey at"
    " the image's own size, aligned with its pixels (0 = no evidence, 255 = the strongest"
    " the model shows), named in the JSON as `heatmap`. Written for every model;"
    " `heatmap_validated` says whether the page would show it.",
)
@click.option(
    "--bundle",
    "bundles",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Score with the model bundle in DIR (a candidate version) instead of the box's"
    " version of that model, for this run only. Refused unless every file matches its"
    " manifest.",
)
@json_option
@translate_errors
def screen(files, data_dir, population, heatmap_dir, bundles, as_json) -> None:
    """Screen image files directly (no service, nothing stored). Decision support only."""
    from appliance.screening.direct import screen_file

    config = configure(data_dir)
    screener = load_screener(config)
    for folder in bundles:
        _use_bundle(screener, folder)
    for path in files:
        result = screen_file(screener, path, config.max_image_pixels, population, heatmap_dir)
        if as_json:
            click.echo(json.dumps(result, default=str))
            continue
        if result["route"] == "refused":
            echo(f"{path}: REFUSED - {result['reason']}")
        elif result["needs_population"]:
            echo(f"{path}: NOT SCREENED - {result['reason']}")
        else:
            model = result["model"]
            scored_as = f"{result['population']}, " if result["population"] else ""
            echo(
                f"{path}: {result['route']} ({scored_as}{model['name']} {model['version']})"
                f" score {result['score']}/100 ({result['triage']})"
                " - decision support, not a diagnosis"
            )
            if result["heatmap"]:
                checked = "" if result["heatmap_validated"] else " (maps not validated)"
                echo(f"  heatmap: {result['heatmap']}{checked}")


def _use_bundle(screener, folder: Path) -> None:
    from appliance.errors import BundleError

    try:
        loaded = screener.models.use_bundle(folder)
    except BundleError as exc:
        raise click.ClickException(f"--bundle {folder}: not a usable model bundle: {exc}") from exc
    click.echo(f"scoring with {loaded.bundle.name} {loaded.bundle.version} from {folder}", err=True)


@click.command()
@data_dir_option
@click.option("--limit", default=500, show_default=True)
@json_option
@translate_errors
def results(data_dir, limit, as_json) -> None:
    """List stored screening results, newest first."""
    from appliance.screening.pipeline import finding_name
    from appliance.store.db import Store
    from appliance.store.results import list_results

    rows = list_results(Store.open(configure(data_dir).data_dir), limit)
    for row in rows:  # named as the SR, FHIR and the hub name it
        row["finding"] = finding_name(
            {"name": row["model_name"], "version": row["model_version"]}, row["probability"]
        )
        row["flagged"] = (
            None if row["probability"] is None else row["probability"] >= row["threshold"]
        )
    if as_json:
        print_json(rows)
        return
    for row in rows:
        what = (
            f"score {row['score']:>3}/100 {row['triage']:<8} {row['model_name']}"
            + (f" [{row['finding']}]" if row["finding"] else "")
            + (f" ({row['population']})" if row["population"] else "")
            if row["route"] != "refused"
            else f"refused: {row['reason']}"
        )
        echo(
            f"{row['created_at'][:19]}  #{row['image_id']:<6} "
            f"{row['patient_id'] or _file_name(row):<14}"
            f" {row['route']:<10} {what}"
        )
    if rows:
        click.echo("Decision support, not a diagnosis: a clinician reviews every result.")


COMMANDS = (ingest, studies, quarantine, volumes, screen, results)
