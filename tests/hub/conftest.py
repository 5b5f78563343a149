"""Fixtures of the hub tests live in tests/conftest.py (database_url, postgres)."""
