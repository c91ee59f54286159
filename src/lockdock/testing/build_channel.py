"""Child process of ``lockdock.testing.channel.build_channel``: build ``.conda`` packages.

Reads ``{"channel_dir": str, "packages": [FakePackage as JSON]}`` on stdin and writes each
package to ``channel_dir/<subdir>/``. Imports py-rattler-build only (never py-rattler).
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockdock.testing.channel import BUILD_TIMESTAMP


def build_one(channel_dir: Path, spec: dict[str, Any]) -> Path:
    from rattler_build import FileEntry, assemble_package

    subdir = spec["subdir"]
    out_dir = channel_dir / subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    noarch = spec.get("noarch") or ("generic" if subdir == "noarch" else None)
    with tempfile.TemporaryDirectory(prefix="lockdock-pkg-") as staging:
        staged = Path(staging)
        entries: list[Any] = []
        for rel, text in sorted(spec["files"].items()):
            target = staged / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            entries.append(FileEntry.from_paths(target, rel))
        kwargs: dict[str, Any] = {}
        if spec.get("source_dir"):
            kwargs["files_dir"] = spec["source_dir"]
            if entries:
                kwargs["files"] = entries
        elif entries:
            kwargs["files"] = entries
        else:
            kwargs["files_dir"] = staged  # an empty package (metadata only)
        output = assemble_package(
            name=spec["name"],
            version=spec["version"],
            target_platform=subdir,
            build_string=spec["build"],
            output_dir=out_dir,
            depends=spec["depends"] or None,
            constrains=spec["constrains"] or None,
            build_number=spec["build_number"],
            noarch=noarch,  # type: ignore[arg-type]  # validated by rattler-build
            license=spec.get("license"),
            timestamp=datetime.fromtimestamp(spec.get("timestamp", BUILD_TIMESTAMP), tz=UTC),
            detect_prefix=bool(spec.get("detect_prefix")),
            compression_threads=1,
            **kwargs,
        )
        return Path(output.path)


def main() -> int:
    request = json.load(sys.stdin)
    channel_dir = Path(request["channel_dir"])
    for spec in request["packages"]:
        build_one(channel_dir, spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
