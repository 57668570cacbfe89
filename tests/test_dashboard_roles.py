"""Who may do what on the dashboard: support viewers see, support agents act, others get 403."""

from __future__ import annotations

import pytest
from django.test import Client

from dashboard.models import AuditRecord
from heartbeat.services import get_live_state
from tests.test_dashboard_views import PAGES, POSTS, play, user_page

pytestmark = pytest.mark.django_db

VIEW_PAGES = ["/dashboard/", "/dashboard/users/", "/dashboard/user/?id=alice"]
ACTION_PAGES = ["/dashboard/user/evict/?id=alice&session=s0", "/dashboard/user/evict-all/?id=alice"]


def nothing_changed() -> None:
    assert len(get_live_state().sessions("alice")) == 2
    assert get_live_state().get_limit("alice").override is None
    assert AuditRecord.objects.count() == 0


@pytest.mark.parametrize("url", PAGES)
def test_staff_without_a_support_role_get_403_on_every_page(roleless_staff_client: Client, url: str) -> None:
    play("alice", 2)
    response = roleless_staff_client.get(url)
    assert response.status_code == 403 and b'id="forbidden"' in response.content
    assert b"alice" not in response.content.split(b'id="forbidden"')[1]


@pytest.mark.parametrize(("url", "data"), POSTS)
def test_staff_without_a_support_role_can_change_nothing(roleless_staff_client: Client, url: str, data: dict) -> None:
    play("alice", 2)
    assert roleless_staff_client.post(url, data).status_code == 403
    nothing_changed()


@pytest.mark.parametrize("url", VIEW_PAGES)
def test_support_viewers_see_the_pages(viewer_client: Client, url: str) -> None:
    play("alice", 2)
    assert viewer_client.get(url).status_code == 200


@pytest.mark.parametrize("url", ACTION_PAGES)
def test_support_viewers_get_403_on_the_eviction_pages(viewer_client: Client, url: str) -> None:
    play("alice", 2)
    assert viewer_client.get(url).status_code == 403


@pytest.mark.parametrize(("url", "data"), POSTS)
def test_support_viewers_can_change_nothing(viewer_client: Client, url: str, data: dict) -> None:
    play("alice", 2)
    assert viewer_client.post(url, data).status_code == 403
    nothing_changed()


def test_support_viewers_see_no_buttons_they_may_not_use(viewer_client: Client) -> None:
    play("alice", 2)
    content = viewer_client.get(user_page("alice")).content.decode()
    assert content.count('data-session="') == 2
    assert 'value="Evict"' not in content and "Evict all sessions" not in content
    assert 'name="limit"' not in content


def test_support_agents_see_the_buttons(staff_client: Client) -> None:
    play("alice", 2)
    content = staff_client.get(user_page("alice")).content.decode()
    assert content.count('value="Evict"') == 2 and "Evict all sessions" in content and 'name="limit"' in content


def test_superusers_may_do_everything(client: Client, django_user_model) -> None:
    client.force_login(django_user_model.objects.create_superuser("root", password="root-pass-123"))
    play("alice", 2)
    assert client.get(user_page("alice")).status_code == 200
    assert client.post("/dashboard/user/evict/", {"id": "alice", "session": "s0"}).status_code == 302
    assert client.post("/dashboard/user/limit/", {"id": "alice", "limit": "4"}).status_code == 302
    assert get_live_state().get_limit("alice").override == 4


def test_the_migration_made_both_groups_with_their_permissions() -> None:
    from django.contrib.auth.models import Group

    def codenames(name: str) -> set[str]:
        # The dashboard's own (the webhooks app adds its own to these groups: tests/test_webhooks_admin.py).
        permissions = Group.objects.get(name=name).permissions.filter(content_type__app_label="dashboard")
        return set(permissions.values_list("codename", flat=True))

    assert codenames("Support viewer") == {"view_sessions", "view_auditrecord"}
    assert codenames("Support agent") == {"view_sessions", "evict_session", "change_limit", "view_auditrecord"}


def staff_with(django_user_model, username: str, *codenames: str):
    """A staff account holding exactly these dashboard permissions, in no group."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username, password=f"{username}-pass-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="dashboard", codename__in=codenames))
    return user


def test_changing_a_limit_needs_change_limit_and_not_evict_session(client: Client, django_user_model) -> None:
    play("alice", 2)
    client.force_login(staff_with(django_user_model, "limits-only", "view_sessions", "change_limit"))
    assert client.post("/dashboard/user/limit/", {"id": "alice", "limit": "4"}).status_code == 302
    assert get_live_state().get_limit("alice").override == 4
    # The same account may not evict.
    assert client.post("/dashboard/user/evict/", {"id": "alice", "session": "s0"}).status_code == 403
    assert len(get_live_state().sessions("alice")) == 2


def test_evicting_does_not_let_a_user_change_a_limit(client: Client, django_user_model) -> None:
    play("alice", 2)
    client.force_login(staff_with(django_user_model, "evict-only", "view_sessions", "evict_session"))
    assert client.post("/dashboard/user/limit/", {"id": "alice", "limit": "4"}).status_code == 403
    assert get_live_state().get_limit("alice").override is None
    assert client.post("/dashboard/user/evict/", {"id": "alice", "session": "s0"}).status_code == 302
    assert [s.session_id for s in get_live_state().sessions("alice")] == ["s1"]
