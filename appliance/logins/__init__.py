"""Staff logins, shared by the box and the hub: server-side sessions (``sessions``) and
the failed-login throttle (``throttle``).

Both work on whichever database connection they are given (the box's SQLite, the
hub's SQLite or PostgreSQL), inside the caller's transaction, so they sit below the
store and the hub and import neither.
"""
