"""Screen anyway: a clinician says what an image is when the box's router refused it.

Only a refusal by the router (the model that looks at the pixels: "cannot tell what this
image shows", "not a chest X-ray or a retina photograph", "labelled as ... but does not
look like one") may be overruled, never one by the DICOM tags (a CT, a hand, a side
view). The choice is kept with the image, attributed and audited, and the image is
screened again with that route; the refusal stays on record (results are never changed)
and the new result says a clinician chose its route.

A retina photo the quality check judged not gradable may be screened anyway too
(:func:`screen_ungradable`, issue 26): a retake costs the patient a second dilation or
trip, and a clinician who can see the retina may prefer a result read with care. Its
result carries a hint that says so, on the page and the slip.
"""

from __future__ import annotations

from typing import Any

from appliance.errors import ApplianceError
from appliance.store import jobs
from appliance.store.db import Store, audit, utc_now
from appliance.store.worklist_items import refresh_item

# screening.gate.ROUTES and BY_ROUTER (the store imports nothing above it).
ROUTES = ("chest_xray", "fundus")
BY_ROUTER, BY_QUALITY = "router", "quality"


class RouteError(ApplianceError):
    """An image cannot be screened as asked."""


def can_choose_route(result: dict[str, Any] | None) -> bool:
    """Whether a result is a refusal a clinician may overrule (the router's)."""
    return bool(result) and result["route"] == "refused" and result["route_source"] == BY_ROUTER


def choose_route(store: Store, image_id: int, route: str, user: dict[str, Any]) -> None:
    """Keep the clinician's choice with the image and queue it to be screened with it."""
    if route not in ROUTES:
        raise RouteError("Choose chest X-ray or retina photo.")
    with store.write() as conn:
        if not can_choose_route(_latest(conn, image_id)):
            raise RouteError(
                "Only an image the box could not recognise can be screened anyway; "
                "a refusal by the image's own DICOM tags stands."
            )
        conn.execute(
            "UPDATE images SET route_chosen=?, route_chosen_by=?, route_chosen_at=? WHERE id=?",
            (route, user["username"], utc_now(), image_id),
        )
        _screen_again(conn, image_id, user, "image.route_chosen", route)
    store.jobs_waiting.set()


def can_screen_ungradable(result: dict[str, Any] | None) -> bool:
    """Whether a result is a retina photo the quality check refused (a clinician may
    have it screened anyway)."""
    return bool(result) and result["route"] == "refused" and result["route_source"] == BY_QUALITY


def screen_ungradable(store: Store, image_id: int, user: dict[str, Any]) -> None:
    """Keep the clinician's word with the image and queue it to be screened although
    the quality check refused it."""
    with store.write() as conn:
        if not can_screen_ungradable(_latest(conn, image_id)):
            raise RouteError("Only a retina photo refused as not gradable can be screened so.")
        conn.execute(
            "UPDATE images SET quality_overruled_by=?, quality_overruled_at=? WHERE id=?",
            (user["username"], utc_now(), image_id),
        )
        _screen_again(conn, image_id, user, "image.quality_overruled", "fundus")
    store.jobs_waiting.set()


def _latest(conn, image_id: int) -> dict[str, Any] | None:
    """The route and what decided it, of the image's latest result."""
    row = conn.execute(
        "SELECT route, route_source FROM results WHERE image_id = ? ORDER BY id DESC LIMIT 1",
        (image_id,),
    ).fetchone()
    return dict(row) if row else None


def _screen_again(conn, image_id: int, user: dict[str, Any], action: str, detail: str) -> None:
    """Queue the image to be screened again, refresh its worklist row, audit why."""
    jobs.requeue(conn, jobs.SCREEN, image_id)
    refresh_item(conn, image_id)
    audit(conn, user["username"], action, f"image:{image_id}", detail)
