import logging
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "convexa.settings")
application = get_wsgi_application()


def _announce() -> None:
    """One start-up line: where provider calls go, with the auth masked (spec: "prints BatchData URL")."""
    from skiptrace.provider import BatchDataClient

    client = BatchDataClient.from_settings()
    logging.getLogger("convexa.server").info("BatchData endpoint %s auth %s", client.url, client.masked_auth)


_announce()
