"""The BatchData sandbox moved to the development-tools app: ``devtools.sandbox``.

This module re-exports its public names so that older imports (``from skiptrace.sandbox import
SandboxServer``) and ``python -m skiptrace.sandbox`` keep working. Product code never imports it.
"""

from devtools.sandbox import *  # noqa: F403

if __name__ == "__main__":
    import sys

    from devtools.sandbox.cli import main

    sys.exit(main())
