"""The support roles: which dashboard permissions each group holds.

Migrations 0003, 0006 and 0007 create the groups with these permissions (it keeps its own
copy, as migrations must); ``ensure_support_groups`` puts them back where a
database was emptied (tests that flush it).
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

SUPPORT_VIEWER = "Support viewer"
SUPPORT_AGENT = "Support agent"
SUPPORT_LEAD = "Support lead"
ROLES = {
    SUPPORT_VIEWER: ["view_sessions", "view_auditrecord"],
    SUPPORT_AGENT: ["view_sessions", "evict_session", "change_limit", "view_auditrecord"],
    # Migration 0006: an agent who may also change the limit policies; 0007: and mark accounts not sharing.
    SUPPORT_LEAD: [
        "view_sessions",
        "evict_session",
        "change_limit",
        "change_policy",
        "mark_not_sharing",
        "view_auditrecord",
    ],
}


def ensure_support_groups() -> dict[str, Group]:
    """Create the groups if missing, with their permissions; return them by name."""
    groups = {}
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="dashboard", codename__in=codenames))
        groups[name] = group
    return groups
