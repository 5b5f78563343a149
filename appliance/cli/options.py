"""What every command shares: ``--data-dir``, ``--json``, loading the settings and the
models, and the one place an ``ApplianceError`` becomes a one-line message."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from appliance.config import Config, load_config
from appliance.errors import ApplianceError
from appliance.terminal import printable

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
            raise click.ClickException(printable(exc)) from exc

    return wrapper


def configure(data_dir: Path, **overrides: Any) -> Config:
    """The settings in effect for ``data_dir``, with logging set up to match."""
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


def load_screener(config: Config, required: bool = True):
    """Load the bundled models once; a broken installation is an error when required."""
    from appliance.screening.models import ModelSet
    from appliance.screening.pipeline import Screener

    models = ModelSet(config, log_progress=lambda line: click.echo(line, err=True)).load()
    if required and models.errors:
        problems = "; ".join(f"{name}: {error}" for name, error in models.errors.items())
        raise click.ClickException(f"models not usable ({problems}); run `appliance doctor`")
    return Screener(models, config)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))
