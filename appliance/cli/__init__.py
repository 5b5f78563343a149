"""The ``appliance`` command. ApplianceErrors become one-line messages here, nowhere else.

One module per group of commands: ``box`` runs and checks the box, ``images`` gets
images in and lists what is stored, ``sync`` talks to the hub, ``hub`` runs one;
``monitoring`` records outcomes, calibrates and watches for drift; ``models``
signs, installs, compares, activates and rolls back model bundles; ``pacs`` sends DICOM
results to PACS; ``training`` exports confirmed cases for retraining; ``options`` is
what they share. Nothing outside this package imports it.
"""

from __future__ import annotations

import click

from appliance import __version__
from appliance.cli import box, hub, images, models, monitoring, pacs, sync, training


@click.group()
@click.version_option(__version__, prog_name="appliance")
def main() -> None:
    """Offline screening appliance (decision support, not a diagnosis)."""


GROUPS = (sync.sync, hub.hub, models.models, pacs.pacs, training.training)
for command in (*box.COMMANDS, *images.COMMANDS, *monitoring.COMMANDS, *GROUPS):
    main.add_command(command)
