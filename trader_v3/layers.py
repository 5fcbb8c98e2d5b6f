"""The Redis channel layer's configuration, in one place for settings and the tests that start their own Redis."""

from __future__ import annotations

from typing import Any


def redis_channel_layer(url: str, *, prefix: str, capacity: int, expiry: int) -> dict[str, Any]:
    import redis.exceptions  # here: importing redis costs every process about 50 ms, and most use no Redis

    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 gives sockets a 5 s timeout by default, exactly channels-redis's 5 s blocking read
            # (BZPOPMIN), so every receive() that waited 5 s for a message failed with TimeoutError. The
            # socket must outlast that read; a dead Redis is still noticed within 15 s.
            # A pooled connection that Redis closed (a restart, an idle timeout) fails the next command sent
            # on it; one retry on a fresh connection keeps that from killing a console's socket.
            "hosts": [
                {
                    "address": url,
                    "socket_timeout": 15,
                    "socket_connect_timeout": 5,
                    "retry_on_error": [redis.exceptions.ConnectionError],
                }
            ],
            "capacity": capacity,
            "expiry": expiry,
            "prefix": prefix,
        },
    }
