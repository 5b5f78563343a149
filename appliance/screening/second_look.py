"""A second look at a frame the router refused, at the part of it that matters: a
retina's small round field cut from its black surround (``field_look``). Only a retina
route is taken from it, the tags still rule out what they rule out, and the quality
check and the model follow as for any retina photo. Pure: the router is passed in.

Measured and not kept (issue 26 note): the same look for chest films -- the film cut
from a flat border, turned upright, or inverted -- sent NEMA's extremity CR (RG3) and
small grey faces to the chest models; the router refuses those frames as it should.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.inference.preprocess import FundusFrame, fundus_frame
from appliance.screening import gate
from appliance.screening.field_look import lit_field

RouteOf = Callable[[np.ndarray], dict[str, float]]  # pixels -> the router's probabilities

FIELD_ALONE = "a small lit field in a black frame: looked again at the field alone"


@dataclass
class SecondLook:
    decision: gate.GateDecision
    router: dict[str, float] | None = None  # the probabilities the decision rests on
    frame: FundusFrame | None = None  # found on the way: the quality check reuses it


def look_again(decision: gate.GateDecision, tags: Mapping[str, Any], pixels: np.ndarray,
               min_confidence: float, route_of: RouteOf) -> SecondLook:
    """``decision`` unchanged unless the router alone refused the frame and a second look
    routes the part that matters."""
    if decision.route != gate.REFUSED or decision.source != gate.BY_ROUTER:
        return SecondLook(decision)
    expected, _ = gate.expectation_from_tags(dict(tags))
    frame = None
    if expected in (None, gate.FUNDUS):
        frame = fundus_frame(pixels)
        field = lit_field(pixels, frame)
        if field is not None:
            probs = route_of(field)
            again = gate.decide(probs, dict(tags), min_confidence)
            if again.route == gate.FUNDUS:
                return SecondLook(_taken(decision, again, FIELD_ALONE), probs, frame)
    return SecondLook(decision, frame=frame)


def _taken(first: gate.GateDecision, again: gate.GateDecision, why: str) -> gate.GateDecision:
    again.evidence = [*first.evidence, why, *again.evidence]
    return again
