"""The money path's former single module, kept so that ``skiptrace.service`` imports keep working.

The money path is the package ``skiptrace.money`` (read its ``__init__`` first); this module only
re-exports its public names. New code imports ``skiptrace.money``.
"""

from skiptrace.money import *  # noqa: F403
from skiptrace.money import __all__  # noqa: F401
