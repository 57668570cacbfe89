"""Support's "not sharing" marks, their two audit actions, and the mark_not_sharing permission for "Support lead"."""

import django.db.models.deletion
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

LEAD = "Support lead"


def grant_to_leads(apps, schema_editor):
    # Permissions are normally made after all migrations (post_migrate); the group needs this one now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=LEAD)
    group.permissions.add(*Permission.objects.filter(content_type__app_label="dashboard", codename="mark_not_sharing"))


def revoke_from_leads(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    for group in apps.get_model("auth", "Group").objects.filter(name=LEAD):
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label="dashboard", codename="mark_not_sharing")
        )


class Migration(migrations.Migration):

    dependencies = [
        ('dashboard', '0006_change_policy'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditrecord',
            name='action',
            field=models.CharField(choices=[('evict_session', 'Evicted a session'), ('evict_all', 'Evicted all sessions'), ('set_limit', 'Set a limit override'), ('clear_limit', 'Cleared the limit override'), ('block_new', 'Blocked new sessions'), ('unblock_new', 'Lifted the block on new sessions'), ('mark_not_sharing', 'Marked the account not sharing'), ('clear_not_sharing', 'Cleared the not-sharing mark')], max_length=32),
        ),
        migrations.CreateModel(
            name='SharingMark',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('stream_user_id', models.CharField(max_length=128, unique=True, verbose_name='user id')),
                ('marked_by_name', models.CharField(max_length=150)),
                ('marked_at', models.DateTimeField(auto_now_add=True)),
                ('reason', models.CharField(blank=True, max_length=200)),
                ('marked_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-marked_at', '-id'],
                'permissions': [('mark_not_sharing', 'Can mark an account not sharing (lowers its sharing risk score)')],
            },
        ),
        migrations.RunPython(grant_to_leads, revoke_from_leads),
    ]
