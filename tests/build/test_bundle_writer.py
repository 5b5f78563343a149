"""The card writer renders every committed bundle's own manifest (``--recard`` does)."""

from __future__ import annotations

import pytest

from appliance.inference.bundle import find_bundles, load_bundle
from build.bundle_writer import render_card
from build.pipeline import REPO


@pytest.mark.parametrize("path", find_bundles(REPO / "models"), ids=lambda p: p.parent.name)
def test_card_renders_from_the_committed_manifest(path) -> None:
    """The pipeline records one fused-vs-members figure (a float, the router), the fusing
    script one per graph (a dict): the card states the worst of either."""
    manifest = load_bundle(path).manifest
    card = render_card(manifest, manifest["limitations"])
    assert card.startswith(f"# {manifest['name']} {manifest['version']}")
    if manifest["validation"].get("fused"):
        assert "Served as one graph" in card
