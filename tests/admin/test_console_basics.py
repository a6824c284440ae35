"""The ops console's basics: its own name, times to the second, search by phone or email, and
downloads of leads' contacts only for who may see contacts."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission

from tests.admin.test_admin import LEADS, fail_items, lead_with_contacts, make_run, phone

pytestmark = pytest.mark.django_db


def test_the_console_is_convexas_ops_site_with_no_view_site_link(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "Convexa ops console" in page
    assert "Django administration" not in page and "View site" not in page


def test_times_are_shown_to_the_second(admin_client):
    lead_with_contacts("T-1", [phone("+18135550142")])
    listing = admin_client.get(LEADS).content.decode()
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", listing)
    assert "p.m." not in listing and "a.m." not in listing


@pytest.mark.parametrize("term", ["(813) 555-0142", "+1 813 555 0142", "8135550142", "1-813-555-0142"])
def test_a_lead_is_found_by_its_phone_in_any_format(admin_client, term):
    lead_with_contacts("S-1", [phone("+18135550142")])
    lead_with_contacts("S-2", [phone("+18135550199")])
    page = admin_client.get(LEADS, {"q": term}).content.decode()
    assert "S-1" in page and "S-2" not in page


def test_a_lead_is_found_by_its_email_in_any_case(admin_client):
    lead_with_contacts("E-1", [], [{"address": "denise.a@example.net", "isPrimary": True}])
    lead_with_contacts("E-2", [], [{"address": "other@example.net", "isPrimary": True}])
    page = admin_client.get(LEADS, {"q": "Denise.A@Example.NET"}).content.decode()
    assert "E-1" in page and "E-2" not in page


def test_run_downloads_need_the_contacts_view_permission_too(client, django_user_model):
    run = make_run(2)
    fail_items(run)  # finished, with files
    user = django_user_model.objects.create_user("viewer", password="pw-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_run"))
    client.login(username="viewer", password="pw-123456")
    for name in ("enriched.csv", "report.json"):
        assert client.get(f"/admin/skiptrace/run/{run.run_id}/download/{name}").status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_lead"))
    client.logout()
    client.login(username="viewer", password="pw-123456")
    assert client.get(f"/admin/skiptrace/run/{run.run_id}/download/enriched.csv").status_code == 200
