"""The audit trail in the Django admin: read-only, since it is evidence."""

from django.contrib import admin

from dashboard.models import AuditRecord


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    """Lists every eviction and limit change; nobody edits or deletes them here."""

    list_display = ("created_at", "actor_name", "action", "stream_user_id", "session_id", "detail", "reason")
    list_filter = ("action",)
    search_fields = ("stream_user_id", "session_id", "actor_name")
    date_hierarchy = "created_at"

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
