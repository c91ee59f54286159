"""``flavor.toml`` texts for test and demo projects (lockdock.flavors reads them)."""

from __future__ import annotations

from pathlib import Path

#: The repository's own two flavors as test projects use them (a cuda flavor on its own,
#: without `extends`, has the same sources: a root flavor starts from environment.yml).
STANDARD_FLAVORS = {
    "cpu": 'accelerator = "cpu"\ndefault = true\nmoving-tags = ["cpu", "latest"]\n',
    "cuda": 'accelerator = "cuda"\nmoving-tags = ["cuda"]\n',
}


def write_flavor(
    images: Path, name: str, flavor_toml: str | None = None, dockerfile: str = "FROM scratch\n"
) -> Path:
    """``images/<name>/{Dockerfile,flavor.toml}``; ``flavor_toml`` defaults to the standard
    text of ``name`` (KeyError for any other name: say what the flavor is)."""
    directory = images / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    text = flavor_toml if flavor_toml is not None else STANDARD_FLAVORS[name]
    (directory / "flavor.toml").write_text(text, encoding="utf-8")
    return directory
