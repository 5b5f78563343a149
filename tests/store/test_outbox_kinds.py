"""Outcomes and the monitoring summary in the outbox: after results and reviews, each in
batches of its own, so a hub that does not know them yet still gets everything else."""

from __future__ import annotations

from monitoring.cases import confirm, scored

from appliance.store import deliveries, outbox
from appliance.store.users import create_user, get_user


def test_results_and_reviews_go_first_and_later_kinds_in_batches_of_their_own(store):
    from appliance.store.reviews import add_review

    names = scored(store, [0.9, 0.1])
    confirm(store, names, [True, False])
    outbox.record_monitor(store.conn(), {"warnings": []})
    user = get_user(store, create_user(store, "dr.banda", "1357", "clinician"))
    add_review(store, image_id=1, user=user, verdict="agree", reasons=[], note="")
    batches = []
    while batch := outbox.pending(store.conn(), 3):
        batches.append([e.kind for e in batch])
        deliveries.mark_acked(store, [e.key for e in batch])
    assert batches == [
        ["result", "result", "review"],
        ["outcome", "outcome"],
        ["monitor"],
    ]
    # A new summary supersedes one still waiting; the hub keeps the highest revision.
    with store.write() as conn:
        first = outbox.record_monitor(conn, {"warnings": ["a"]})
        second = outbox.record_monitor(conn, {"warnings": ["b"]})
    assert first[0] == second[0] == outbox.MONITOR_ENTRY and second[1] == first[1] + 1
    [waiting] = outbox.pending(store.conn(), 10)
    assert waiting.revision == second[1] and waiting.payload == {"warnings": ["b"]}
    assert outbox.last_monitor_payload(store.conn()) == {"warnings": ["b"]}
