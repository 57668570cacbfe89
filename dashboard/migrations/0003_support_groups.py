"""The two support roles as groups: "Support viewer" (sees) and "Support agent" (sees and acts)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = "Support viewer"
AGENT = "Support agent"
ROLES = {
    VIEWER: ["view_sessions", "view_auditrecord"],
    AGENT: ["view_sessions", "evict_session", "change_limit", "view_auditrecord"],
}


def create_groups(apps, schema_editor):
    # Permissions are normally made after all migrations (post_migrate); the
    # groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="dashboard", codename__in=codenames))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("dashboard", "0002_support_permissions"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
