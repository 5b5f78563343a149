"""Offline-first sync to the central hub: the worker and client that drain the hub's rows
of the outbox (``appliance.store.outbox``), data-mule export, de-identification, enrolment.

The service runs the sync worker only once a hub is configured. The outbox itself is
the store's, written inside its transactions; the formats the hub must read too are in
``appliance.wire``.
"""
