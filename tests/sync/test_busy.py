"""A hub shedding load answers 503 (or 429) with Retry-After: the box waits as told, with
jitter, and does not count it among the few failures a request may have."""

from __future__ import annotations

import pytest

from appliance.errors import HubBusyError, HubUnreachableError
from appliance.sync.client import HubClient
from appliance.sync.worker import BUSY_ANSWERS, REQUEST_ATTEMPTS, SyncWorker, busy_delay

BUSY = b'{"error": {"code": "busy", "message": "the hub is busy: send again in 3 s"}}'


def test_503_or_429_with_retry_after_says_when_to_come_back():
    client = HubClient("http://127.0.0.1:1")
    for status in (503, 429):
        with pytest.raises(HubBusyError) as raised:
            client._answer(status, BUSY, "3")
        assert raised.value.retry_after == 3.0 and "busy" in str(raised.value)
    with pytest.raises(HubBusyError) as raised:
        client._answer(503, b"", "999999")
    assert raised.value.retry_after == 3600.0  # a silly request is believed only so far


@pytest.mark.parametrize("retry_after", [None, "", "Wed, 21 Oct 2026 07:28:00 GMT", "-1"])
def test_503_without_a_usable_retry_after_is_an_ordinary_failure(retry_after):
    with pytest.raises(HubUnreachableError) as raised:
        HubClient("http://127.0.0.1:1")._answer(503, b"", retry_after)
    assert not isinstance(raised.value, HubBusyError)


def test_busy_delay_is_what_the_hub_asked_stretched_at_random_and_capped():
    assert busy_delay(4, 900, lambda: 0.0) == 4
    assert busy_delay(4, 900, lambda: 0.999) == pytest.approx(7.996)
    assert busy_delay(60, 10, lambda: 0.5) == 15  # never past sync_retry_max_seconds


def _answers(busy: int, then):
    calls = {"n": 0}

    def call():
        calls["n"] += 1
        if calls["n"] <= busy:
            raise HubBusyError("busy", retry_after=0.001)
        return then()

    return call, calls


def test_busy_answers_are_not_failures(box):
    store, config = box
    worker = SyncWorker(store, config)
    call, calls = _answers(REQUEST_ATTEMPTS + 3, lambda: "stored")
    assert worker._retry(call, "batch") == "stored"
    assert calls["n"] == REQUEST_ATTEMPTS + 4


def test_a_hub_that_stays_busy_ends_the_pass(box):
    store, config = box
    worker = SyncWorker(store, config)
    call, calls = _answers(10_000, lambda: "stored")
    with pytest.raises(HubBusyError):
        worker._retry(call, "batch")
    assert calls["n"] == BUSY_ANSWERS + 1


def test_real_failures_still_end_after_a_few_attempts(box):
    store, config = box
    worker = SyncWorker(store, config)

    def down():
        raise HubUnreachableError("connection refused")

    call, calls = _answers(2, down)  # two busy answers, then the hub is gone
    with pytest.raises(HubUnreachableError):
        worker._retry(call, "batch")
    assert calls["n"] == 2 + REQUEST_ATTEMPTS
