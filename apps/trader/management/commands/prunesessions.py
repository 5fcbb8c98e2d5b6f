"""``manage.py prunesessions --older-than 30d [--yes]``: delete old sessions and their recordings."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.trader.pruning import parse_age, sessions_delete, sessions_prunable


class Command(BaseCommand):
    help = (
        "Delete finished sessions older than an age, with their transitions and recorded market data. "
        "A dry run by default: it lists what would go. Running sessions are never deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            metavar="AGE",
            help="e.g. 30d, 12h, 2w: sessions that ended longer ago than this",
        )
        parser.add_argument("--yes", action="store_true", help="really delete (default: dry run)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            age = parse_age(options["older_than"])
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from None
        now = timezone.now()
        sessions = sessions_prunable(older_than=age, now=now)
        if not sessions:
            self.stdout.write(f"No finished session ended more than {options['older_than']} ago.")
            return
        for s in sessions:
            ended = s.ended_at.strftime("%Y-%m-%d %H:%M") if s.ended_at else "never closed"
            self.stdout.write(
                f"session {s.id:>6}  {s.environment:<10} {s.status:<8} {s.started_at:%Y-%m-%d %H:%M} -> {ended:<16}"
                f"  snapshots {s.snapshots:,}  deltas {s.deltas:,}  gaps {s.gaps:,}"
            )
        recorded = sum(s.recorded for s in sessions)
        summary = f"{len(sessions)} session(s), {recorded:,} recorded rows"
        if not options["yes"]:
            self.stdout.write(f"Dry run: {summary} would be deleted. Pass --yes to delete them.")
            return
        deleted = sessions_delete(session_ids=[s.id for s in sessions])
        self.stdout.write(f"Deleted {deleted} session(s) and their {recorded:,} recorded rows.")
