from __future__ import annotations

import os

import pytest


def services_configured() -> bool:
    return bool(os.environ.get("REDIS_URL")) and os.environ.get("DATABASE_URL", "").startswith("postgres")


@pytest.fixture(autouse=True)
def _real_services(request: pytest.FixtureRequest) -> None:
    """Tests marked ``services`` need the real PostgreSQL and Redis.

    Without DATABASE_URL and REDIS_URL they are skipped (``make test``); with REQUIRE_SERVICES=1 (CI)
    a missing service is a failure, never a skip.
    """
    if request.node.get_closest_marker("services") is None or services_configured():
        return
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail("REQUIRE_SERVICES=1 but DATABASE_URL (PostgreSQL) and REDIS_URL are not both set")
    pytest.skip("needs DATABASE_URL (PostgreSQL) and REDIS_URL; .ci/run provides them")
