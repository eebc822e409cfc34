"""Paths and small helpers the tests share."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = REPO_ROOT / "migrations"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
