"""The deployment: gunicorn with the repository's gunicorn.conf.py, behind the shipped nginx config.

- No log of an end-to-end run (gunicorn's access log, the worker's log, nginx's access log) holds a
  token: not the signed artifact links' query tokens, not a token sent as a query parameter, not
  the admin or the provider token, and no phone number or email.
- Behind nginx, twelve clients that send their bodies a byte every half second do not starve the
  web workers: ``/api/health`` answers at once. Without nginx the same clients do (the control).

Everything listens on 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from contacts.models import Email, Phone
from tests.conftest import ADMIN_TOKEN, PROVIDER_TOKEN
from tests.e2e.test_worker import ROOT, start_worker, subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

_spec = importlib.util.spec_from_file_location("convexa_load_script", ROOT / "scripts" / "load.py")
load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(load)

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
H = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _leads(n: int) -> list[dict]:
    return [{"lead_id": f"DP-{i}", "first_name": "Pat", "last_name": f"Owner{i}", "street": f"{300 + i} Pine St",
             "city": "Tampa", "state": "FL", "zip": "33610"} for i in range(n)]


def test_no_log_of_an_end_to_end_run_holds_a_token_phone_or_email(sandbox, tmp_path):
    env = subprocess_env(sandbox.url, tmp_path / "reports", ADMIN_TOKEN=ADMIN_TOKEN, LOG_LEVEL="info",
                         DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    port = load.free_port()
    base = f"http://127.0.0.1:{port}"
    web_log = tmp_path / "gunicorn.log"
    web = load.start_gunicorn(env, port, web_log, workers=1, threads=2)
    worker = None
    try:
        load.wait_ready(base, web, timeout_s=60)
        created = requests.post(f"{base}/api/skiptrace-runs", headers=H, timeout=30,
                                json={"source_label": "deploy", "leads": _leads(20)})
        assert created.status_code == 200, created.text
        run_id = created.json()["run_id"]
        worker = start_worker(env, "--exit-when-idle")
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, out
        links = requests.get(f"{base}/api/skiptrace-runs/{run_id}/artifacts", headers=H, timeout=30).json()
        urls = [links["report_json_url"], links["enriched_csv_url"]]
        tokens = [re.search(r"token=([^&]+)", u).group(1) for u in urls]
        for url in urls:
            assert requests.get(url, timeout=30).status_code == 200
        query_secret = "qs-secret-0123456789abcdef"
        requests.get(f"{base}/api/health?token={query_secret}&api_key={query_secret}", timeout=30)
    finally:
        load.stop(web)
        if worker is not None and worker.poll() is None:
            worker.kill()
    logs = web_log.read_text() + out
    assert f"/api/skiptrace-runs/{run_id}/artifacts" in logs  # the access log is on and was read
    for secret in [*tokens, query_secret, ADMIN_TOKEN, PROVIDER_TOKEN]:
        assert secret not in logs, secret
    numbers = {p[2:] for p in Phone.objects.values_list("number", flat=True)}
    emails = set(Email.objects.values_list("address", flat=True))
    assert numbers and emails
    for value in numbers | emails:
        assert value not in logs, "a contact value reached a log"


def _render_nginx(tmp: Path, listen: int, upstream: int) -> Path:
    server = (ROOT / "deploy" / "nginx" / "convexa.conf").read_text()
    server = server.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    server = server.replace("server 127.0.0.1:6001;", f"server 127.0.0.1:{upstream};")
    server = server.replace("/var/log/nginx/convexa.access.log", str(tmp / "access.log"))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{server}
}}
""")
    return conf


def _slow_clients(port: int, n: int, stop: threading.Event) -> list[threading.Thread]:
    """n clients that POST a 10,000-byte body one byte every half second (bounded: until stop, 20 s at most)."""
    def client() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"POST /api/skiptrace-runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 10000\r\n\r\n{")
                deadline = time.monotonic() + 20
                while not stop.is_set() and time.monotonic() < deadline:
                    s.sendall(b" ")
                    stop.wait(0.5)
        except OSError:
            pass

    threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def _health_times(base: str, tries: int = 4) -> list[float | None]:
    times: list[float | None] = []
    for _ in range(tries):
        started = time.monotonic()
        try:
            ok = requests.get(f"{base}/api/health", timeout=2.0).status_code == 200
            times.append(time.monotonic() - started if ok else None)
        except requests.RequestException:
            times.append(None)
        time.sleep(0.2)
    return times


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs Debian's nginx)")
def test_slow_clients_do_not_starve_the_web_workers_behind_nginx(tmp_path):
    env = subprocess_env("http://127.0.0.1:9", tmp_path / "reports", ADMIN_TOKEN=ADMIN_TOKEN,
                         DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    app_port, proxy_port = load.free_port(), load.free_port()
    web = load.start_gunicorn(env, app_port, tmp_path / "gunicorn.log", workers=1, threads=2)
    proxy = subprocess.Popen([NGINX, "-c", str(_render_nginx(tmp_path, proxy_port, app_port)), "-p", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    stop = threading.Event()
    try:
        load.wait_ready(f"http://127.0.0.1:{app_port}", web, timeout_s=60)
        load.wait_ready(f"http://127.0.0.1:{proxy_port}", proxy, timeout_s=30)
        behind_proxy = _slow_clients(proxy_port, 12, stop)
        time.sleep(1.0)
        via_proxy = _health_times(f"http://127.0.0.1:{proxy_port}")
        stop.set()
        for t in behind_proxy:
            t.join(timeout=10)
        # The control: the same twelve clients straight at gunicorn hold its two threads.
        stop.clear()
        direct = _slow_clients(app_port, 12, stop)
        time.sleep(1.0)
        straight = _health_times(f"http://127.0.0.1:{app_port}", tries=2)
        stop.set()
        for t in direct:
            t.join(timeout=10)
    finally:
        stop.set()
        load.stop(web)
        load.stop(proxy)
    assert all(t is not None and t < 1.0 for t in via_proxy), via_proxy
    assert any(t is None for t in straight), f"the control did not starve gunicorn: {straight}"
    access = (tmp_path / "access.log").read_text()
    assert "GET /api/health" in access and "?" not in access.split("GET /api/health", 1)[1].split('"', 1)[0]


def test_a_plain_gunicorn_started_here_reads_the_repositorys_config():
    config = (ROOT / "gunicorn.conf.py").read_text()
    assert "%(U)s" in config and "%(r)s" not in config and "%(q)s" not in config
    assert json.dumps("wsgi_app") and 'wsgi_app = "convexa.wsgi:application"' in config
