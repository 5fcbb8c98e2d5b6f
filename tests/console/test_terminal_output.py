"""What the terminal shows: each event once, with or without DEBUG."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import manage, migrate, project_env


@pytest.mark.parametrize("debug", ["false", "true"])
def test_a_failed_probe_is_printed_once(tmp_path: Path, debug: str) -> None:
    env = project_env(tmp_path, DEBUG=debug)
    migrate(env)
    result = manage(env, "shell", "-c", "from django.test import Client; print(Client().get('/v3/health').status_code)")
    assert result.stdout.strip().splitlines()[-1] == "503"
    assert result.stderr.count("Service Unavailable: /v3/health") == 1, result.stderr
