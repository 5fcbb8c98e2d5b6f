from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

# The admin's "View site" link leads to the console (each session's page links back to the admin).
admin.site.site_url = "/v3-trader"
# The app list beside every page takes a fifth of a 1400 px screen from the session list; the home page has it.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("", RedirectView.as_view(url="/v3-trader", permanent=False)),
    path("admin/", admin.site.urls),
    path("", include("apps.console.urls")),
]
