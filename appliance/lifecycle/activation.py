"""Choosing which version screens: activate, roll back, list.

Activation is one transaction (the old active version becomes ``installed``, the new
one ``active``, the generation moves on) after the new version's files have been
verified again; a running worker sees the generation between jobs, loads the new set
in the background and swaps it in whole, so no image meets a half-loaded model and a
job finishes on the set that claimed it (appliance/screening/pipeline.py).
"""

from __future__ import annotations

from typing import Any

from appliance.config import Config
from appliance.errors import BundleError, ModelStateError
from appliance.inference.bundle import load_bundle
from appliance.lifecycle.install import pause_point
from appliance.screening.models import REQUIRED, models_dir, newest_bundles, version_dir
from appliance.store import model_versions
from appliance.store.db import Store, audit


def _remember_shipped(conn, config: Config, name: str) -> None:
    shipped = newest_bundles(models_dir(config)).get(name)
    if shipped is not None:
        model_versions.remember_bundled(conn, name, shipped.name)


def activate(
    store: Store, config: Config, name: str, version: str, actor: str = "cli"
) -> dict[str, Any]:
    """Make ``version`` of ``name`` the one that screens; returns what it replaced."""
    with store.write() as conn:
        _remember_shipped(conn, config, name)
    row = model_versions.row(store.conn(), name, version)
    if row is None or row["state"] == model_versions.REFUSED:
        raise ModelStateError(f"{name} {version} is not installed on this box")
    if row["state"] == model_versions.ACTIVE:
        raise ModelStateError(f"{name} {version} is already active")
    try:  # its files again, now: a folder changed since install is never activated
        load_bundle(version_dir(config, row))
    except BundleError as exc:
        with store.write() as conn:
            audit(conn, actor, "model.activation_refused", f"model:{name}/{version}", str(exc))
        raise ModelStateError(f"{name} {version} not activated: {exc}") from exc
    with store.write() as conn:
        previous = model_versions.activate(conn, name, version)
        audit(
            conn,
            actor,
            "model.activated",
            f"model:{name}/{version}",
            f"replaces {previous}" if previous else "",
        )
        pause_point("activate.before_commit")
    return {"name": name, "version": version, "previous": previous}


def rollback(store: Store, config: Config, name: str, actor: str = "cli") -> dict[str, Any]:
    """Return ``name`` to the version that was active before the current one."""
    current = model_versions.active_row(store.conn(), name)
    if current is None or not current["previous_version"]:
        raise ModelStateError(f"{name}: no earlier version to roll back to")
    done = activate(store, config, name, current["previous_version"], actor)
    with store.write() as conn:
        audit(
            conn,
            actor,
            "model.rolled_back",
            f"model:{name}/{done['version']}",
            f"from {current['version']}",
        )
    return done


def listing(store: Store, config: Config) -> list[dict[str, Any]]:
    """Every version the box knows: recorded rows, and shipped ones not written down
    yet (active while no other version of that name was activated)."""
    recorded = model_versions.rows(store.conn())
    names = {r["name"] for r in recorded if r["state"] == model_versions.ACTIVE}
    shipped = newest_bundles(models_dir(config))
    for name in REQUIRED:
        if name not in names and name in shipped:
            recorded.append(
                {
                    "name": name,
                    "version": shipped[name].name,
                    "state": model_versions.ACTIVE,
                    "source": model_versions.BUNDLED,
                    "key_id": model_versions.BUNDLED,
                    "reason": None,
                    "installed_at": None,
                    "activated_at": None,
                    "previous_version": None,
                }
            )
    return sorted(recorded, key=lambda r: (r["name"], r["installed_at"] or "", r["version"]))
