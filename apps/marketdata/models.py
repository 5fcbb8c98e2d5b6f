"""Recorded market data (snapshots, deltas, gaps)."""

from __future__ import annotations
