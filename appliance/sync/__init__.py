"""Offline-first sync to the central hub: outbox, client, worker, data-mule bundles.

Nothing here is imported at start-up unless a hub is configured; the outbox module is
small and dependency-free because the store calls it inside its transactions.
"""
