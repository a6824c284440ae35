"""gunicorn's settings: read by ``make serve`` and by a plain ``gunicorn`` started in this folder.

The access log never shows a query string: ``%(U)s`` is the path alone, so a signed artifact link's
``?token=…`` (a download of phones and emails for an hour) or any token a client sends as a query
parameter stays out of it. Put a buffering reverse proxy in front (``deploy/nginx/convexa.conf``):
gunicorn's threads then never wait on a slow client's body.
"""

import os

wsgi_app = "convexa.wsgi:application"
bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT', '6001')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))  # a 100,000-row upload is not cut off
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
access_log_format = '%(h)s - - %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
