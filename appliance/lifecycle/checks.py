"""What a new bundle version must agree with on this box before it is installed.

Its name is a model the box runs; its version is a plain folder name; its input
contract (input tensor, preprocessing, outputs, labels) is the one the running version
has, since the same pipeline feeds both; and it does not ask for a newer appliance
(``requires_appliance`` in the manifest, optional: the lowest appliance version).

One exception: the input's height and width may change where the preprocessing makes
exactly that size (its ``size`` parameter), because the pipeline prepares each version's
input from that version's own manifest (``cxr-adult-abnormal`` 3.0.0 reads 128 px where
2.x read 64: a box running 2.x takes it as an update).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import appliance
from appliance.errors import ModelPackageError
from appliance.inference import preprocess

VERSION_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
# What the pipeline relies on: a version may change the weights, the calibration and
# the operating points, never these.
CONTRACT = ("input", "labels")
PREPROCESSING_CONTRACT = ("function", "module", "input_contract")


def _contract(manifest: Mapping[str, Any], key: str) -> Any:
    """``manifest[key]`` as the contract compares it: an input whose height and width
    are the ``size`` its own preprocessing makes compares without them."""
    value = manifest.get(key)
    if key != "input" or not isinstance(value, Mapping):
        return value
    shape = list(value.get("shape") or [])
    size = (manifest.get("preprocessing") or {}).get("params", {}).get("size")
    if len(shape) == 4 and size is not None and shape[2:] == [size, size]:
        return {**value, "shape": [*shape[:2], "size", "size"]}
    return value


def version_tuple(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.+-]", str(text)))


def check_new_version(
    manifest: Mapping[str, Any], running: Mapping[str, Any] | None, known: tuple[str, ...]
) -> None:
    """Raise ModelPackageError saying what does not fit; ``running`` is the manifest of
    the version this box runs for that name (None: the box runs none)."""
    name, version = str(manifest["name"]), str(manifest["version"])
    if name not in known:
        raise ModelPackageError(f"{name!r} is not a model this box runs ({', '.join(known)})")
    if not VERSION_PATTERN.match(version):
        raise ModelPackageError(f"version {version!r} is not a plain version name")
    required = manifest.get("requires_appliance")
    if required and version_tuple(required) > version_tuple(appliance.__version__):
        raise ModelPackageError(
            f"{name} {version} needs appliance {required} or newer; this box runs"
            f" {appliance.__version__}"
        )
    spec = manifest["preprocessing"]
    if spec.get("module") != preprocess.__name__ or not callable(
        getattr(preprocess, str(spec.get("function")), None)
    ):
        raise ModelPackageError(
            f"{name} {version}: preprocessing {spec.get('module')}.{spec.get('function')}"
            " is not one this appliance has"
        )
    if running is None:
        return
    differs = [key for key in CONTRACT if _contract(manifest, key) != _contract(running, key)]
    differs += [
        f"preprocessing.{key}"
        for key in PREPROCESSING_CONTRACT
        if spec.get(key) != running["preprocessing"].get(key)
    ]
    if set(manifest["outputs"]) != set(running["outputs"]):
        differs.append("outputs")
    if differs:
        raise ModelPackageError(
            f"{name} {version}: input contract differs from the running"
            f" {running['version']} ({', '.join(differs)}): the pipeline could not feed it"
        )
