#!/usr/bin/env python3
"""Sign a published flavor with cosign (keyless) and attest its SBOMs.

    python ci/sign_and_attest.py FLAVOR [--repository REG/NAME] [--dry-run]

Reads images.lock.json (written by `lockdock publish`): signs the published digest (the index
when several platforms were published, which covers every tag pointing at it), and attaches
each platform's CycloneDX SBOM (written by publish next to its gate report) as an in-toto
attestation to that platform's manifest digest. Keyless: cosign gets an OIDC token from
GitHub Actions (`id-token: write`), no key is stored anywhere. `--dry-run` prints the cosign
commands instead of running them.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from lockdock.errors import LockdockError
from lockdock.sbom import SBOM_FILE
from lockdock.workspace import IMAGES_LOCK, Workspace, published_records

ROOT = Path(__file__).resolve().parents[1]


def commands(root: Path, flavor: str, repository: str | None) -> list[list[str]]:
    workspace = Workspace(root)
    try:
        data = workspace.read_images_lock()
    except LockdockError as error:
        raise SystemExit(str(error)) from None
    if data is None:
        raise SystemExit(f"No {workspace.images_lock_path}: run `lockdock publish` first.")
    records = published_records(data, flavor, repository)
    if len(records) != 1:
        raise SystemExit(f"{IMAGES_LOCK} has {len(records)} record(s) of {flavor}"
                         f"{' in ' + repository if repository else ''}; expected one.")
    (record,) = records
    repo = record["repository"]
    # the git commit rides on the signature, not in the image (one lock, one digest)
    revision = ["-a", f"revision={record['revision']}"] if record.get("revision") else []
    out = [["cosign", "sign", "--yes", *revision, f"{repo}@{record['digest']}"]]
    for platform, entry in sorted(record["platforms"].items()):
        sbom = root / Path(entry["gate_report"]).parent / SBOM_FILE
        if not sbom.is_file():
            raise SystemExit(f"No SBOM for {platform} at {sbom}: publish writes it.")
        out.append(["cosign", "attest", "--yes", "--type", "cyclonedx", "--predicate", str(sbom),
                    f"{repo}@{entry['digest']}"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flavor")
    parser.add_argument("--repository")
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    for command in commands(args.root, args.flavor, args.repository):
        print("+", shlex.join(command), flush=True)
        if not args.dry_run:
            subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
