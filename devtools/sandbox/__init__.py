"""A local simulator of the BatchData property skip-trace endpoint, V1 and V3.

Used by ``make demo``, end-to-end tests, crash tests and benchmarks. Product code never imports this
package: it reaches the sandbox only through ``BATCHDATA_BASE_URL``. Standard library only (no Django),
so it can also run as ``python -m devtools.sandbox --port 8787``. Modules: ``config`` (knobs, stats),
``answers`` (V1) and ``answers_v3`` (V3, unreadable 200s), ``server`` (HTTP), ``cli`` (running it).

Everything an answer contains is a pure function of the request content and ``SandboxConfig`` (see
:func:`answer` and :func:`answer_v3`), so a re-run of the same input gets the same matches, persons,
phones and emails. V1 and V3 share the decision of whether an input matches (:func:`match_decision`).

Routes:

- ``POST /api/v1/property/skip-trace`` — V1: ``results.persons[]``, one person per request, TCPA-flagged
  phones dropped unless ``options.includeTCPABlacklistedPhones``.
- ``POST /api/v3/property/skip-trace`` — V3: ``result.data[]``, one entry per request with ``input`` (the
  request echoed), ``property`` (when matched), ``persons`` (0 to 3, phones ranked, TCPA-flagged phones
  kept) and ``meta``; ``result.meta.results.matchCount`` counts entries matched with at least one person
  (what the provider bills). ``options`` is accepted and ignored.
- (other methods on either endpoint → 405.)
- ``GET /_sandbox/stats`` — :meth:`SandboxStats.snapshot`, including what the provider would have billed
  (``billed_matches``: the ``matchCount`` of every 2xx answer, unreadable ones included).
- ``POST /_sandbox/reset`` — reset the stats (and re-seed the ``error_rate`` / ``unreadable_rate``
  generators and the unreadable-kind rotation).
- ``GET|POST /_sandbox/config`` — read / update :class:`SandboxConfig` fields from a JSON object, so an
  out-of-process test can inject faults.
- anything else → 404 JSON.

Street markers (uppercased, anywhere in the street): ``NOMATCH`` never matches; ``ALWAYSMATCH`` always
matches with a callable mobile and an email; ``LITIGATOR`` matches with a litigator owner (V1: without
phones; V3: with phones); ``DECEASEDMATCH`` matches with a deceased owner (V3); ``FAMILYMATCH`` matches
with three persons in V3 (owner, co-owner, non-owner relative).

Faults (``SandboxConfig.fault``, every request): ``500``/``429``/``401``/``402`` answer that status,
``403_balance`` answers V3's out-of-credits 403 ``Insufficient balance``, ``timeout`` hangs ``hang_s``,
``reset`` drops the connection, and ``malformed`` (not JSON), ``drift`` (the list renamed) and ``short``
(one entry fewer) answer a billed 200 the client cannot map. ``unreadable_rate`` answers that fraction of
requests with such a billed 200, rotating through :data:`UNREADABLE_KINDS`; ``match_count_extra`` raises
every 200's ``matchCount`` above the per-person matches (capped at the request count).
"""

from devtools.sandbox.answers import (  # noqa: F401
    answer,
    has_unit,
    item_key,
    match_decision,
    strip_unit,
    validate,
)
from devtools.sandbox.answers_v3 import (  # noqa: F401
    ANSWERS,
    answer_v3,
    unreadable_answer,
)
from devtools.sandbox.cli import (  # noqa: F401
    add_arguments,
    config_from_options,
    is_loopback,
    main,
    serve_until_signal,
)
from devtools.sandbox.config import (  # noqa: F401
    FAULTS,
    MAX_BODY_BYTES,
    MAX_REQUESTS_PER_CALL,
    SKIPTRACE_PATH,
    SKIPTRACE_PATH_V3,
    SKIPTRACE_PATHS,
    UNREADABLE_KINDS,
    V3_API_VERSION,
    SandboxConfig,
    SandboxStats,
    max_in_window,
)
from devtools.sandbox.server import (  # noqa: F401
    SandboxServer,
)
