"""``python -m devtools.sandbox --port 8787``."""

import sys

from devtools.sandbox.cli import main

sys.exit(main())
