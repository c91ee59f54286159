#!/usr/bin/env python3
"""The weekly relock pull request's body: lock diff, image-size delta, the layer table (what a
user who has the published image pulls to update), numerics-fingerprint diff.

    python ci/relock_report.py --flavor cpu --old-lock OLD.yml --new-lock NEW.yml \
        [--old-image REF --new-image REF] [--old-fingerprint F --new-fingerprint F] [-o OUT.md]

Every input but the two locks is optional; a missing one is reported as "not measured", never
guessed. Several flavors' outputs are concatenated by `nox -s relock-report`.
Reads locks with lockdock.installer.lockfile, image sizes with the Docker SDK.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lockdock.installer.lockfile import LockedArtifact, read_lock


def _entries(path: Path) -> dict[str, dict[tuple[str, str], LockedArtifact]]:
    lock = read_lock(path)
    table: dict[str, dict[tuple[str, str], LockedArtifact]] = {}
    for artifact in lock.artifacts:
        table.setdefault(artifact.platform, {})[(artifact.manager, artifact.name)] = artifact
    return table


def _describe(artifact: LockedArtifact) -> str:
    build = f" {artifact.build}" if artifact.build else ""
    return f"{artifact.version}{build}"


def lock_diff(old: Path, new: Path) -> list[str]:
    """Markdown: per platform, the packages added, removed and changed (version or build)."""
    before, after = _entries(old), _entries(new)
    lines: list[str] = []
    for platform in sorted(set(before) | set(after)):
        a, b = before.get(platform, {}), after.get(platform, {})
        rows = []
        for key in sorted(set(a) | set(b)):
            manager, name = key
            if key not in a:
                rows.append(f"| {name} | {manager} | — | {_describe(b[key])} | added |")
            elif key not in b:
                rows.append(f"| {name} | {manager} | {_describe(a[key])} | — | removed |")
            elif (a[key].version, a[key].build, a[key].sha256) != (
                b[key].version, b[key].build, b[key].sha256
            ):
                rows.append(f"| {name} | {manager} | {_describe(a[key])} | {_describe(b[key])} "
                            "| changed |")
        lines.append(f"#### {platform}: {len(rows)} change(s), {len(b)} packages")
        if rows:
            lines += ["", "| package | manager | old | new | |", "|---|---|---|---|---|", *rows]
        lines.append("")
    return lines


def image_size(reference: str) -> int | None:
    try:
        import docker

        return int(docker.from_env().images.get(reference).attrs["Size"])
    except Exception:  # absent image or no engine: "not measured"
        return None


def size_delta(old: str | None, new: str | None) -> list[str]:
    old_size = image_size(old) if old else None
    new_size = image_size(new) if new else None
    if old_size is None or new_size is None:
        return [f"Image size: not measured (old {old or 'none'}: {old_size}, new "
                f"{new or 'none'}: {new_size})."]
    delta = new_size - old_size
    return [f"Image size: {old_size / 1e6:.1f} MB -> {new_size / 1e6:.1f} MB "
            f"({delta / 1e6:+.1f} MB, {delta / old_size:+.1%})."]


def layer_section(old: str | None, new: str | None) -> list[str]:
    """Markdown: the new image's layers against the old one (``lockdock inspect --against``),
    ending with the bytes a user who has the old image pulls to update."""
    if not new:
        return ["Layers: not measured (no new image)."]
    from lockdock.errors import LockdockError
    from lockdock.inspect import table_for

    try:
        return ["Layers:", "", *table_for(new, against=old)]
    except LockdockError as error:
        return [f"Layers: not measured ({error})"]


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key in sorted(value):
            yield from _flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def fingerprint_diff(old: Path | None, new: Path | None) -> list[str]:
    """Markdown: every fingerprint value that differs between the two gate runs."""
    if old is None or new is None or not old.is_file() or not new.is_file():
        return ["Numerics fingerprint: not compared (a fingerprint.json is missing)."]
    a = dict(_flatten(json.loads(old.read_text(encoding="utf-8"))))
    b = dict(_flatten(json.loads(new.read_text(encoding="utf-8"))))
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k, "—") != b.get(k, "—")]
    if not changed:
        return ["Numerics fingerprint: identical."]
    lines = [f"Numerics fingerprint: {len(changed)} value(s) differ.", "",
             "| key | old | new |", "|---|---|---|"]
    lines += [f"| `{k}` | {str(a.get(k, '—'))[:40]} | {str(b.get(k, '—'))[:40]} |"
              for k in changed]
    return lines


def report(args: argparse.Namespace) -> str:
    lines = [f"### {args.flavor}", "", *size_delta(args.old_image, args.new_image), "",
             *layer_section(args.old_image, args.new_image), "",
             *fingerprint_diff(args.old_fingerprint, args.new_fingerprint), "",
             "Lock diff:", "", *lock_diff(args.old_lock, args.new_lock)]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavor", required=True)
    parser.add_argument("--old-lock", type=Path, required=True)
    parser.add_argument("--new-lock", type=Path, required=True)
    parser.add_argument("--old-image")
    parser.add_argument("--new-image")
    parser.add_argument("--old-fingerprint", type=Path)
    parser.add_argument("--new-fingerprint", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    text = report(args)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
