#!/usr/bin/env python
"""Django's command-line utility for Trader V3."""

from __future__ import annotations

import os
import sys


def _environment_from_argv(argv: list[str]) -> str | None:
    """The value of ``--env`` on the command line, if any.

    Settings read ``.env.<ENVIRONMENT>`` while they load, which is before the command parses its own
    options, so ``runtrader --env paper`` has to be known here.
    """
    for index, arg in enumerate(argv):
        if arg == "--env" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--env="):
            return arg.split("=", 1)[1]
    return None


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trader_v3.settings")
    environment = _environment_from_argv(sys.argv[2:])
    if environment:
        os.environ["ENVIRONMENT"] = environment
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    from trader_v3.envreader import exit_on_problems

    try:
        # Load the settings before any command: Django would otherwise hide their problems behind
        # "Unknown command" or a traceback.
        settings.INSTALLED_APPS  # noqa: B018
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A broken configuration is one clear line per problem, all of them at once, not a traceback.
        exit_on_problems(exc)


if __name__ == "__main__":
    main()
