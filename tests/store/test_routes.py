"""Screen anyway (store/routes.py): a clinician overrules the router, never the tags."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import testdata

from appliance.store.routes import RouteError, choose_route
from appliance.worker import Worker

DOCTOR = {"username": "dr.banda"}


def tiles() -> bytes:
    """Coloured squares: the router is sure this is "other"."""
    squares = np.random.default_rng(7).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return cv2.imencode(".png", np.kron(squares, np.ones((32, 32, 1), np.uint8)))[1].tobytes()


def latest(store, image_id: int):
    return store.conn().execute(
        "SELECT route, route_source, model_name FROM results WHERE image_id=? ORDER BY id DESC",
        (image_id,),
    ).fetchone()


def test_a_router_refusal_is_screened_as_the_clinician_says_and_audited(
    store, config, importer, screener
):
    photo = importer.import_bytes(tiles(), source="upload", original_name="tiles.png").image_id
    ct = importer.import_path(testdata("CT_small.dcm"), source="dicom").image_id
    Worker(store, config, screener, name="t").drain()
    assert tuple(latest(store, photo)) == ("refused", "router", None)
    assert tuple(latest(store, ct)) == ("refused", "tags", None)

    with pytest.raises(RouteError):  # a CT stays a CT
        choose_route(store, ct, "chest_xray", DOCTOR)
    with pytest.raises(RouteError):
        choose_route(store, photo, "knee", DOCTOR)
    choose_route(store, photo, "chest_xray", DOCTOR)
    item = store.conn().execute(
        "SELECT status FROM worklist_items WHERE image_id=?", (photo,)
    ).fetchone()
    assert item["status"] == "waiting"  # on the worklist until its new result lands
    Worker(store, config, screener, name="t").drain()

    assert tuple(latest(store, photo)) == ("chest_xray", "clinician", "cxr-adult-abnormal")
    count = store.conn().execute("SELECT COUNT(*) FROM results WHERE image_id=?", (photo,))
    assert count.fetchone()[0] == 2  # the refusal stays on record
    audit = store.conn().execute(
        "SELECT actor, subject, detail FROM audit_log WHERE action='image.route_chosen'"
    ).fetchall()
    assert [tuple(a) for a in audit] == [("dr.banda", f"image:{photo}", "chest_xray")]
    with pytest.raises(RouteError):  # once screened, there is no refusal left to overrule
        choose_route(store, photo, "fundus", DOCTOR)
