"""Who may watch the console: anyone on the loopback simulator, only staff outside sim."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps.kalshi.environments import Environment


def login_required_here() -> bool:
    """Outside sim the console shows a trader on a real exchange; read at request time so tests can switch."""
    return bool(settings.ENVIRONMENT != Environment.SIM)


def may_watch(user: Any) -> bool:
    """Whether ``user`` (a Django user, AnonymousUser or None) may see the console, its socket and status."""
    if not login_required_here():
        return True
    return bool(user is not None and user.is_active and user.is_staff)
