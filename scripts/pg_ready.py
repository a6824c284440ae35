"""Exit 0 when the PostgreSQL URL given as argv[1] accepts a connection (used by `make test`)."""

import sys

import psycopg

url = sys.argv[1].replace("postgres://", "postgresql://", 1)
try:
    # Connect to the maintenance DB: the test run creates its own test_<name> database.
    base = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(base, connect_timeout=3):
        pass
except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
    print(f"PostgreSQL not reachable: {exc.__class__.__name__}", file=sys.stderr)
    sys.exit(1)
