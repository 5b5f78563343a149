"""Adult or child: what staff choose for a chest X-ray that came without the patient's age.

Where the site asks (setting ``chest_population = "ask"``), the worker does not guess: it
parks such an X-ray (``images.waiting_for = 'population'``) and the study page asks.
The choice is kept with the image, attributed and audited, and the image is screened
again at once with the model for that population.
"""

from __future__ import annotations

from typing import Any

from appliance.errors import ApplianceError
from appliance.store import jobs
from appliance.store.db import Store, audit, utc_now
from appliance.store.worklist_items import refresh_item

ADULT, CHILD = "adult", "child"
POPULATIONS = (ADULT, CHILD)
WAITING_FOR_POPULATION = "population"


class PopulationError(ApplianceError):
    """A population cannot be chosen for this image as asked."""


def park_for_population(conn, image_id: int) -> None:
    """The worker found a chest X-ray it may not screen without a choice (inside the
    transaction that completes its job)."""
    conn.execute("UPDATE images SET waiting_for=? WHERE id=?", (WAITING_FOR_POPULATION, image_id))
    refresh_item(conn, image_id)
    audit(conn, "worker", "image.waiting", f"image:{image_id}", WAITING_FOR_POPULATION)


def choose_population(store: Store, image_id: int, population: str, user: dict[str, Any]) -> None:
    """Keep the choice with the image and queue it to be screened with it."""
    if population not in POPULATIONS:
        raise PopulationError("Choose adult or child.")
    with store.write() as conn:
        image = conn.execute(
            "SELECT id, waiting_for FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        if image is None:
            raise PopulationError("No such image.")
        if image["waiting_for"] != WAITING_FOR_POPULATION:
            raise PopulationError("This X-ray is not waiting for a choice.")
        conn.execute(
            "UPDATE images SET population=?, population_by=?, population_at=?, waiting_for=NULL"
            " WHERE id=?",
            (population, user["username"], utc_now(), image_id),
        )
        jobs.requeue(conn, jobs.SCREEN, image_id)
        refresh_item(conn, image_id)
        audit(conn, user["username"], "image.population_chosen", f"image:{image_id}", population)
    store.jobs_waiting.set()
