"""Staff dashboard routes."""

app_name = "dashboard"
urlpatterns: list = []
