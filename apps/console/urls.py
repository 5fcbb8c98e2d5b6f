from __future__ import annotations

from django.contrib.auth.views import LogoutView
from django.urls import path

from apps.console import views

urlpatterns = [
    path("v3-trader", views.console_page, name="console"),
    path("v3/login", views.ConsoleLoginView.as_view(), name="console-login"),
    path("v3/logout", LogoutView.as_view(next_page="console-login"), name="console-logout"),
    path("v3/health", views.health, name="health"),
    path("v3/status", views.status, name="status"),
    path("metrics", views.metrics, name="metrics"),
]
