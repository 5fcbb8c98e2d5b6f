"""ASGI entry point: HTTP through Django, WebSockets through the console's router."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from trader_v3.envreader import or_exit_on_problems

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trader_v3.settings")
# Django must be set up before anything imports models (the consumer does). A Daphne worker with bad
# settings prints the same lines as manage.py and exits 2.
django_asgi_app = or_exit_on_problems(get_asgi_application)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from apps.console.routing import websocket_urlpatterns  # noqa: E402
from apps.console.staticfiles import StaticFilesHandler  # noqa: E402

# Daphne serves static files itself only through runserver; the embedded trader serves them here.
http_app = StaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
