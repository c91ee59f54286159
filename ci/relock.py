#!/usr/bin/env python3
"""The weekly relock, one flavor per runner, then one pull-request body.

    python ci/relock.py flavor FLAVOR [--registry REG/NAME] [--out DIR]
    python ci/relock.py body DIR -o BODY.md

`flavor`: keep the committed lock, run `lockdock lock FLAVOR` (conda-forge is reachable on
GitHub's runners), and when the lock changed: fetch, build and gate the new image, gate the
currently published image of the flavor (images.lock.json's pinned reference) for its
numerics fingerprint, and write DIR/FLAVOR.md with ci/relock_report.py (lock diff, image-size
delta, fingerprint diff). A failed gate fails the job: no pull request for a broken relock.

`body`: concatenate the per-flavor reports into the pull request's body.

Called by `nox -s relock` and `nox -s relock-body`; the workflow only calls nox.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))

import relock_report  # noqa: E402  (the sibling script)

from lockdock.workspace import FINGERPRINT_FILE, Workspace, published_records  # noqa: E402


def sh(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def image_id(reference: str) -> str:
    done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", reference],
                          check=True, capture_output=True, text=True)
    return done.stdout.strip()


def fingerprint_of(flavor: str, digest: str) -> Path:
    return Workspace(ROOT).report_dir(flavor, digest) / FINGERPRINT_FILE


def published_reference(flavor: str) -> str | None:
    records = published_records(Workspace(ROOT).read_images_lock(), flavor)
    return str(records[0]["reference"]) if records else None


def relock_flavor(flavor: str, out: Path) -> int:
    from lockdock.spec import load_project

    lock_path = load_project(ROOT).flavors[flavor].lock_path
    old_lock = out / f"{flavor}.old-lock.yml"
    out.mkdir(parents=True, exist_ok=True)
    if lock_path.exists():
        shutil.copyfile(lock_path, old_lock)
    else:
        old_lock.write_text("version: 1\nmetadata: {platforms: []}\npackage: []\n")
    sh("lockdock", "lock", flavor)
    if lock_path.read_bytes() == old_lock.read_bytes():
        (out / f"{flavor}.md").write_text(f"### {flavor}\n\nLock unchanged.\n")
        return 0
    sh("lockdock", "fetch", flavor, "--platform", "linux-64")
    sh("lockdock", "build", flavor)
    sh("lockdock", "test", flavor)
    new_image = f"lockdock/{flavor}:latest"
    new_fingerprint = fingerprint_of(flavor, image_id(new_image))
    old_image = published_reference(flavor)
    old_fingerprint = None
    if old_image:
        sh("docker", "pull", old_image)
        sh("lockdock", "test", flavor, "--image", old_image)
        old_fingerprint = fingerprint_of(flavor, image_id(old_image))
    args = ["--flavor", flavor, "--old-lock", str(old_lock), "--new-lock", str(lock_path),
            "--new-image", new_image, "--new-fingerprint", str(new_fingerprint),
            "-o", str(out / f"{flavor}.md")]
    if old_image and old_fingerprint:
        args += ["--old-image", old_image, "--old-fingerprint", str(old_fingerprint)]
    return relock_report.main(args)


def body(directory: Path, output: Path) -> int:
    parts = [p.read_text(encoding="utf-8") for p in sorted(directory.glob("**/*.md"))]
    text = "\n".join(["## Weekly relock", "",
                      "Locks re-solved against conda-forge and PyPI; each changed flavor was "
                      "built and gated on linux/amd64.", "", *parts])
    output.write_text(text, encoding="utf-8")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("flavor")
    one.add_argument("flavor")
    one.add_argument("--out", type=Path, default=Workspace(ROOT).relock_dir)
    merged = commands.add_parser("body")
    merged.add_argument("directory", type=Path)
    merged.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "flavor":
        return relock_flavor(args.flavor, args.out)
    return body(args.directory, args.output)


if __name__ == "__main__":
    sys.exit(main())
