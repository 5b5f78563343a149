"""Everything the box keeps: one SQLite database and the files beside it."""

from appliance.store.db import Store

__all__ = ["Store"]
