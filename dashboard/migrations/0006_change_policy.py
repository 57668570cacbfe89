"""The change_policy permission, and the "Support lead" role that holds it (an agent who may change policies)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

LEAD = "Support lead"
LEAD_PERMISSIONS = ["view_sessions", "evict_session", "change_limit", "change_policy", "view_auditrecord"]


def create_lead_group(apps, schema_editor):
    # Permissions are normally made after all migrations (post_migrate); the group needs them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=LEAD)
    group.permissions.add(*Permission.objects.filter(content_type__app_label="dashboard", codename__in=LEAD_PERMISSIONS))


def remove_lead_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=LEAD).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0005_block_actions"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="auditrecord",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [
                    ("view_sessions", "Can see live users and sessions on the dashboard"),
                    ("evict_session", "Can evict live sessions"),
                    ("change_limit", "Can set or clear an account's limit override"),
                    ("change_policy", "Can change the limit policies"),
                ],
            },
        ),
        migrations.RunPython(create_lead_group, remove_lead_group),
    ]
