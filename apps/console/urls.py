from __future__ import annotations

from django.urls import path

from apps.console import views

urlpatterns = [
    path("v3-trader", views.console_page, name="console"),
    path("v3/health", views.health, name="health"),
    path("v3/status", views.status, name="status"),
]
