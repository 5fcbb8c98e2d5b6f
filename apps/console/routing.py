from __future__ import annotations

from django.urls import path

from apps.console.consumers import ConsoleConsumer

websocket_urlpatterns = [path("v3/ws", ConsoleConsumer.as_asgi())]
