"""lockdock.installer.lockfile on real conda-lock files (tests/data): entries, platforms,
categories, selection. (Malformed locks: tests/unit/test_lock_guards.py, test_bad_input.py.)"""

from __future__ import annotations

import pytest

from lockdock.errors import UsageError
from lockdock.installer.lockfile import read_lock
from tests.data import BODO, LARSNET, OLD_LAYOUT, PANGEO


def test_a_large_unified_lock_reads_every_entry_per_platform() -> None:
    lock = read_lock(PANGEO)
    assert set(lock.platforms) == {"linux-64", "linux-aarch64", "osx-64", "osx-arm64"}
    assert len(lock.artifacts) == 3091
    assert sum(1 for a in lock.artifacts if a.platform == "linux-64") == len(
        lock.select("linux-64"))
    assert set(lock.content_hash) == set(lock.platforms)


def test_categories_select_optional_entries() -> None:
    lock = read_lock(BODO)
    assert {"main", "dev"} <= lock.categories
    platform = lock.platforms[0]
    main = lock.select(platform)
    both = lock.select(platform, ["main", "dev"])
    assert len(both) > len(main) and {a.key for a in main} <= {a.key for a in both}
    assert all("main" in a.categories for a in main)


def test_conda_before_pip_and_pip_entries_keep_their_hashes() -> None:
    chosen = read_lock(LARSNET).select("linux-64")
    managers = [a.manager for a in chosen]
    assert managers == sorted(managers, key=lambda m: m != "conda") and "pip" in managers
    assert all(a.sha256 and len(a.sha256) == 64 for a in chosen if a.manager == "pip")


def test_the_old_layout_with_md5_only_entries_reads() -> None:
    lock = read_lock(OLD_LAYOUT)
    assert lock.artifacts and any(a.md5 and not a.sha256 for a in lock.artifacts)


def test_an_unknown_platform_or_category_names_what_the_lock_has() -> None:
    lock = read_lock(LARSNET)
    with pytest.raises(UsageError, match=r"no platform 'osx-64'.*linux-64"):
        lock.select("osx-64")
    with pytest.raises(UsageError, match=r"no category nope: its categories are main"):
        lock.select("linux-64", ["nope"])
