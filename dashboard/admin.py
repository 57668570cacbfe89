"""The audit trail in the Django admin: read-only, since it is evidence."""

from django.contrib import admin

from dashboard.models import AuditRecord
from dashboard.templatetags.ids import show_id, show_text


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    """Lists every eviction and limit change; nobody edits or deletes them here."""

    # Ids and free text come from players and staff: shown isolated (see templatetags/ids.py).
    list_display = (
        "created_at",
        "shown_actor",
        "action",
        "shown_user_id",
        "shown_session_id",
        "shown_detail",
        "shown_reason",
    )
    list_filter = ("action",)
    search_fields = ("stream_user_id", "session_id", "actor_name")
    date_hierarchy = "created_at"

    @admin.display(description="actor name", ordering="actor_name")
    def shown_actor(self, record: AuditRecord) -> str:
        return show_text(record.actor_name)

    @admin.display(description="user id", ordering="stream_user_id")
    def shown_user_id(self, record: AuditRecord) -> str:
        return show_id(record.stream_user_id)

    @admin.display(description="session id")
    def shown_session_id(self, record: AuditRecord) -> str:
        return show_id(record.session_id) if record.session_id else ""

    @admin.display(description="detail")
    def shown_detail(self, record: AuditRecord) -> str:
        return show_text(record.detail)

    @admin.display(description="reason")
    def shown_reason(self, record: AuditRecord) -> str:
        return show_text(record.reason) if record.reason else ""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


admin.site.site_header = "StreamLimit administration"
admin.site.site_title = "StreamLimit"
# The admin's "View site" link: the service has no public home page.
admin.site.site_url = "/dashboard/"
