"""The project's git checkout: where it comes from and which commit it is at (an edge).

Build records and ``images.lock.json`` carry the commit; the image does not (its bytes depend
on the build inputs only: the same lock at two commits is one image).
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_facts(root: Path) -> tuple[str | None, str | None]:
    """(remote URL or None, HEAD commit or None) of the project's git checkout."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
            )
        except FileNotFoundError:
            return None
        return proc.stdout.strip() or None if proc.returncode == 0 else None

    return git("config", "--get", "remote.origin.url"), git("rev-parse", "HEAD")
