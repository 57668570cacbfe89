"""The support roles' webhook permissions: viewers and agents see the webhooks page, leads also retry dead letters."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

# Group name -> codenames of this app's permissions (dashboard/roles.py has the dashboard's own).
ROLES = {
    "Support viewer": ["view_endpoint"],
    "Support agent": ["view_endpoint"],
    "Support lead": ["view_endpoint", "view_deadletter", "retry_deadletter"],
}


def grant(apps, schema_editor):
    # Permissions are normally made after all migrations (post_migrate); the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="webhooks", codename__in=codenames))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        for group in Group.objects.filter(name=name):
            group.permissions.remove(
                *Permission.objects.filter(content_type__app_label="webhooks", codename__in=codenames)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("dashboard", "0006_change_policy"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
