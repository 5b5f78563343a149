"""``appliance screen --bundle DIR`` (issue 27): a candidate bundle scores files in place
of the box's version of that model, for that run only; a folder that is not a sound
bundle is refused, naming why. Real committed bundles copied to tmp."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner
from helpers import TESTS, bundle_dir

from appliance.cli import main

FILES = [str(TESTS / "data" / "cxr64" / n) for n in ("IM-0135-0001.png", "IM-0151-0001.png")]


def screen(*args: str):
    return CliRunner().invoke(main, ["screen", *args], catch_exceptions=False)


def scores(output: str) -> list[tuple]:
    found = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [(r["model"]["name"], r["model"]["version"], r["probability"]) for r in found]


def test_a_copied_bundle_gives_the_same_scores_as_the_shipped_one(tmp_path):
    candidate = tmp_path / "candidate"
    shutil.copytree(bundle_dir("cxr-adult-abnormal"), candidate)
    none = str(tmp_path / "none")
    shipped = screen(*FILES, "--population", "adult", "--json", "--data-dir", none)
    with_bundle = screen(*FILES, "--population", "adult", "--json", "--data-dir", none,
                         "--bundle", str(candidate))
    assert shipped.exit_code == 0 and with_bundle.exit_code == 0
    assert scores(with_bundle.output) == scores(shipped.output)
    assert len(scores(shipped.output)) == 2
    assert f"from {candidate}" in with_bundle.output


def test_a_folder_that_is_not_a_sound_bundle_is_refused(tmp_path):
    none = str(tmp_path / "none")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = screen(FILES[0], "--data-dir", none, "--bundle", str(empty))
    assert refused.exit_code == 1
    assert f"--bundle {empty}: not a usable model bundle: no manifest.json" in refused.output

    spoilt = tmp_path / "spoilt"
    shutil.copytree(bundle_dir("cxr-adult-abnormal"), spoilt)
    model = spoilt / "model.int8.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    refused = screen(FILES[0], "--data-dir", none, "--bundle", str(spoilt))
    assert refused.exit_code == 1 and "model.int8.onnx sha256 mismatch" in refused.output
    assert '"score"' not in refused.output

    renamed = tmp_path / "renamed"
    shutil.copytree(bundle_dir("cxr-adult-abnormal"), renamed)
    manifest = json.loads((renamed / "manifest.json").read_text())
    (renamed / "manifest.json").write_text(json.dumps({**manifest, "name": "my-model"}))
    refused = screen(FILES[0], "--data-dir", none, "--bundle", str(renamed))
    assert refused.exit_code == 1 and "'my-model' is not a model this box screens with" in (
        refused.output
    )
