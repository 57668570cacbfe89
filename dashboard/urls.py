"""Staff dashboard routes."""

from django.urls import path

from dashboard import policy_views, risk_views, simulator_views, views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("users/", views.live_users, name="live-users"),
    path("find/", views.find_users, name="find"),
    path("sharing/", views.sharing, name="sharing"),
    path("sharing/risk/", risk_views.sharing_risk, name="sharing-risk"),
    path("sharing/mark/", risk_views.mark_not_sharing, name="sharing-mark"),
    path("policy/simulate/", simulator_views.simulate_policy, name="simulate-policy"),
    path("user/", views.user_detail, name="user"),
    path("user/evict/", views.evict, name="evict"),
    path("user/evict-all/", views.evict_all, name="evict-all"),
    path("user/unblock/", views.unblock, name="unblock"),
    path("user/limit/", views.set_limit, name="set-limit"),
    path("policy/", policy_views.policy, name="policy"),
    path("policy/apply/", policy_views.apply_policy, name="apply-policy"),
]
