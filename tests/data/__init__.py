"""Real-world lock files the suite reads (sources and commits in SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

REALDATA = Path(__file__).resolve().parent
LARSNET = REALDATA / "larsnet-midi" / "conda-lock.yml"
PANGEO = REALDATA / "pangeo-docker-images" / "pangeo-notebook" / "conda-lock.yml"
BODO = REALDATA / "bodo" / "conda-lock.yml"
OLD_LAYOUT = REALDATA / "conda-lock-tests" / "test-lockfile" / "conda-lock.yml"
BODO_SOURCES = tuple(REALDATA / "bodo" / f for f in ("main.yml", "dev.yml", "platform.yml"))
REPO2DOCKER_EXPLICIT = REALDATA / "repo2docker" / "environment.py-3.12-linux-aarch64.lock"
REPO2DOCKER_ENV = REALDATA / "repo2docker" / "environment.py-3.12.yml"
