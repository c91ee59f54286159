"""The pip part of a lock: resolve an environment's ``pip:`` list with uv, per platform.

The conda solution already provides some Python distributions (numpy, torch, ...). pip
must treat them as installed: never replace them, and check the pip packages' requirements
against their conda versions. uv has no notion of "already installed" for a foreign
platform, so we give it one: a throw-away local PEP 503 index, listed before PyPI with
``--index-strategy first-index``, holding a metadata-only stub wheel for each
conda-provided distribution at its conda version, with no requirements of its own (conda
already solved those). uv then resolves the rest against PyPI; stubs are dropped from the
result. A conda version that is not a valid PEP 440 version cannot be a stub; such a
distribution is passed to ``--excludes`` (pip ignores requirements on it).

The target is exact: ``--python-version`` is the solved Python, ``--python-platform`` the
platform's manylinux (bounded by the flavor's ``__glibc``), macOS or Windows target, wheels
only (``--only-binary :all:``). uv's ``pylock.toml`` gives each wheel's URL and sha256;
where a release has several wheels for the target, the one with pip's highest-priority tag
is locked. A second uv run (served from uv's cache) prints the ``# via`` graph, which gives
each entry's ``dependencies`` (names only, ``*``: conda-lock writes pip dependencies the
same way).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from packaging import tags as packaging_tags
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from lockdock.errors import NetworkError, SolveError

#: manylinux targets uv knows (``uv pip compile --python-platform``), by glibc minor.
_UV_MANYLINUX_MINORS = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)

_ARCH = {
    "linux-64": "x86_64",
    "linux-aarch64": "aarch64",
    "linux-ppc64le": "ppc64le",
    "osx-64": "x86_64",
    "osx-arm64": "arm64",
    "win-64": "AMD64",
}


@dataclass(frozen=True)
class ProvidedDistribution:
    """A Python distribution the conda part installs, under its PyPI name."""

    name: str
    version: str


@dataclass(frozen=True)
class PipTarget:
    """What pip resolves for: one conda platform, its Python and its virtual packages."""

    platform: str
    python_version: str
    glibc: tuple[int, int] | None = None
    osx: tuple[int, int] | None = None

    def python_tuple(self) -> tuple[int, int]:
        major, minor = self.python_version.split(".")[:2]
        return int(major), int(minor)

    def uv_platform(self) -> str:
        """The ``--python-platform`` value uv resolves for."""
        if self.platform.startswith("linux-"):
            arch = _ARCH[self.platform]
            if arch not in ("x86_64", "aarch64"):
                raise SolveError(
                    f"The pip part cannot be locked for {self.platform}: uv resolves wheels "
                    "for x86_64 and aarch64 Linux only. Drop the `pip:` list or the platform."
                )
            glibc = self.glibc or (2, 17)
            usable = [m for m in _UV_MANYLINUX_MINORS if glibc[0] == 2 and m <= glibc[1]]
            if not usable:
                raise SolveError(
                    f"The pip part cannot be locked for {self.platform} with __glibc "
                    f"{glibc[0]}.{glibc[1]}: manylinux wheels need glibc 2.17 or newer."
                )
            return f"{arch}-manylinux_2_{max(usable)}"
        if self.platform == "osx-64":
            return "x86_64-apple-darwin"
        if self.platform == "osx-arm64":
            return "aarch64-apple-darwin"
        if self.platform == "win-64":
            return "x86_64-pc-windows-msvc"
        raise SolveError(f"The pip part cannot be locked for platform {self.platform!r}.")

    def platform_tags(self) -> list[str]:
        """Platform tags, most specific first, as pip on that platform would rank them."""
        arch = _ARCH[self.platform]
        if self.platform.startswith("linux-"):
            glibc = self.glibc or (2, 17)
            result: list[str] = []
            for minor in range(glibc[1], 4, -1):
                result.append(f"manylinux_2_{minor}_{arch}")
                legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(minor)
                if legacy:
                    result.append(f"{legacy}_{arch}")
            result.append(f"linux_{arch}")
            return result
        if self.platform.startswith("osx-"):
            version = self.osx or (11, 0)
            return list(packaging_tags.mac_platforms(version, arch))
        return ["win_amd64"]

    def tag_priority(self) -> dict[str, int]:
        """Wheel tag (``py-abi-platform``) -> rank, 0 being the best."""
        version = self.python_tuple()
        platforms = self.platform_tags()
        ordered = [
            *packaging_tags.cpython_tags(python_version=version, platforms=platforms),
            *packaging_tags.compatible_tags(
                python_version=version, interpreter=f"cp{version[0]}{version[1]}",
                platforms=platforms,
            ),
        ]
        ranks: dict[str, int] = {}
        for rank, tag in enumerate(ordered):
            ranks.setdefault(str(tag), rank)
        return ranks


@dataclass(frozen=True)
class PipPackage:
    """One locked pip wheel for one platform."""

    name: str
    version: str
    url: str
    sha256: str
    dependencies: dict[str, str] = field(default_factory=dict)


# --- pure parts ---------------------------------------------------------------------------


def stub_wheel_name(dist: ProvidedDistribution) -> str:
    return f"{canonicalize_name(dist.name).replace('-', '_')}-{dist.version}-py3-none-any.whl"


def split_provided(
    provided: Iterable[ProvidedDistribution],
) -> tuple[list[ProvidedDistribution], list[str]]:
    """(stubs with PEP 440 versions, names to exclude) — one entry per PyPI name."""
    by_name: dict[str, ProvidedDistribution] = {}
    for dist in provided:
        by_name.setdefault(canonicalize_name(dist.name), dist)
    stubs: list[ProvidedDistribution] = []
    excluded: list[str] = []
    for name, dist in sorted(by_name.items()):
        try:
            Version(dist.version)
        except InvalidVersion:
            excluded.append(name)
        else:
            stubs.append(ProvidedDistribution(name, dist.version))
    return stubs, excluded


def choose_wheel(
    wheels: Sequence[tuple[str, str]], target: PipTarget, package: str
) -> tuple[str, str]:
    """The (url, sha256) pip would install on ``target``: best tag rank, then file name."""
    ranks = target.tag_priority()
    best: tuple[int, str, str, str] | None = None
    for url, sha256 in wheels:
        filename = url.rsplit("/", 1)[-1]
        try:
            _, _, _, wheel_tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            continue
        rank = min((ranks[str(t)] for t in wheel_tags if str(t) in ranks), default=None)
        if rank is None:
            continue
        candidate = (rank, filename, url, sha256)
        if best is None or candidate < best:
            best = candidate
    if best is None:
        raise SolveError(
            f"pip requirement {package!r} has no wheel for platform {target.platform} "
            f"(Python {target.python_version}, {target.uv_platform()})."
        )
    return best[2], best[3]


def parse_pylock(text: str, target: PipTarget, stub_names: set[str]) -> list[PipPackage]:
    """Packages of uv's ``pylock.toml``, stubs dropped, one chosen wheel each."""
    data = tomllib.loads(text)
    result: list[PipPackage] = []
    for entry in data.get("packages", []):
        name = canonicalize_name(entry["name"])
        if name in stub_names:
            continue
        wheels = [
            (w["url"], w["hashes"]["sha256"])
            for w in entry.get("wheels", [])
            if "url" in w and "sha256" in w.get("hashes", {})
        ]
        if not wheels:
            raise SolveError(
                f"pip requirement {name!r} has no wheel for platform {target.platform} "
                f"(Python {target.python_version}, {target.uv_platform()}): uv chose "
                f"{entry.get('version', '?')} without a wheel URL and sha256."
            )
        url, sha256 = choose_wheel(wheels, target, name)
        result.append(PipPackage(name=name, version=str(entry["version"]), url=url, sha256=sha256))
    return result


_REQ_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")


def parse_via_graph(text: str) -> dict[str, set[str]]:
    """``package -> {its dependencies}`` from uv's requirements output (``# via`` notes)."""
    dependencies: dict[str, set[str]] = {}
    current: str | None = None
    in_via = False
    for raw in text.splitlines():
        line = raw.strip()
        match = _REQ_LINE.match(line)
        if match:
            current = canonicalize_name(match.group("name"))
            dependencies.setdefault(current, set())
            in_via = False
            via_inline = line.split("# via", 1)[1] if "# via" in line else None
            if via_inline is not None:
                _add_parents(dependencies, current, via_inline.split(","))
            continue
        if current is None or not line.startswith("#"):
            continue
        body = line.lstrip("#").strip()
        if body.startswith("via"):
            in_via = True
            body = body[3:].strip()
            if body:
                _add_parents(dependencies, current, body.split(","))
        elif in_via and body:
            _add_parents(dependencies, current, [body])
    return dependencies


def _add_parents(graph: dict[str, set[str]], child: str, parents: Iterable[str]) -> None:
    for parent in parents:
        parent = parent.strip()
        if not parent or parent.startswith("-") or " " in parent:
            continue  # "-r requirements.in", "--override ...": the root request
        graph.setdefault(canonicalize_name(parent), set()).add(child)


# --- edge: run uv -------------------------------------------------------------------------


def _write_stub_index(index_dir: Path, stubs: Sequence[ProvidedDistribution]) -> None:
    for dist in stubs:
        name = canonicalize_name(dist.name)
        folder = index_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        wheel = stub_wheel_name(dist)
        dist_info = f"{wheel.split('-')[0]}-{dist.version}.dist-info"
        with zipfile.ZipFile(folder / wheel, "w") as archive:
            archive.writestr(
                f"{dist_info}/METADATA",
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {dist.version}\n"
                "Summary: provided by the conda part of the lock (lockdock stub)\n",
            )
            archive.writestr(
                f"{dist_info}/WHEEL",
                "Wheel-Version: 1.0\nGenerator: lockdock\nRoot-Is-Purelib: true\n"
                "Tag: py3-none-any\n",
            )
            archive.writestr(f"{dist_info}/RECORD", "")
        (folder / "index.html").write_text(
            f'<!DOCTYPE html><html><body><a href="{wheel}">{wheel}</a></body></html>\n',
            encoding="utf-8",
        )


def _uv(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.setdefault("UV_NO_PROGRESS", "1")
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [sys.executable, "-m", "uv", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


_NETWORK_MARKERS = (
    "failed to fetch",
    "error sending request",
    "dns error",
    "connection refused",
    "network is unreachable",
    "timed out",
    "could not connect",
)


def _uv_failure(stderr: str, target: PipTarget, requirements: Sequence[str]) -> Exception:
    message = " ".join(line.strip() for line in stderr.splitlines() if line.strip())
    lowered = message.lower()
    where = f"platform {target.platform} (Python {target.python_version}, {target.uv_platform()})"
    if any(marker in lowered for marker in _NETWORK_MARKERS) and "no solution" not in lowered:
        return NetworkError(
            f"uv could not reach the Python package index while resolving the pip part for "
            f"{where}: {message} Check the network, or point uv at a reachable index "
            "with UV_DEFAULT_INDEX."
        )
    culprits = re.findall(r"all versions of ([A-Za-z0-9._-]+) have no usable wheels", message)
    culprits += re.findall(r"([A-Za-z0-9._-]+)==\S+ has no usable wheels", message)
    culprits += re.findall(r"no wheels with a matching \S+ tag[^.]*? for ([\w.-]+)", message)
    if culprits or "no usable wheels" in lowered or "no wheels" in lowered:
        names = ", ".join(dict.fromkeys(culprits)) or "a requirement"
        return SolveError(
            f"pip requirement {names} has no wheel for {where}; lockdock locks wheels only. "
            f"uv said: {message}"
        )
    return SolveError(
        f"The pip requirements {', '.join(requirements)} cannot be resolved for {where}: "
        f"{message}"
    )


def index_options(indexes: Sequence[str], allow_pypi: bool = True) -> list[str]:
    """uv options for extra pip indexes (flavor.toml ``pip-indexes``, environment.yml
    ``pip-repositories``), after the conda-provided stubs and before PyPI, which stays the
    default index unless ``allow-pypi-requests: false``. Pure; refuses what it cannot honour.
    """
    from lockdock.errors import SpecError

    options: list[str] = []
    for number, url in enumerate(indexes, start=1):
        parsed = urlparse(url)
        if parsed.scheme not in ("https", "http", "file") or not (parsed.netloc or parsed.path):
            raise SpecError(f"pip index {url!r} is not an http(s):// or file:// URL.")
        if "$" in url or parsed.username or parsed.password:
            raise SpecError(
                f"pip index {url!r} carries credentials or environment variables: lockdock "
                "records artifact URLs in the lock and downloads them without credentials, "
                "so it locks only from indexes readable without them."
            )
        if allow_pypi or number < len(indexes):
            options += ["--index", f"extra{number}={url}"]
        else:  # the last one replaces PyPI as the default (lowest-priority) index
            options += ["--default-index", url]
    if not allow_pypi and not indexes:
        raise SpecError(
            "`allow-pypi-requests: false` with no `pip-repositories` / `pip-indexes`: the "
            "pip part would have no index to resolve from."
        )
    return options


def resolve_pip(
    requirements: Sequence[str],
    target: PipTarget,
    provided: Iterable[ProvidedDistribution] = (),
    indexes: Sequence[str] = (),
    allow_pypi: bool = True,
) -> list[PipPackage]:
    """Resolve ``requirements`` (PEP 508 strings) for ``target``; sorted by name.

    ``indexes`` are searched before PyPI, first index first (uv's ``first-index``: a
    package found in one index is taken only from it, so an index cannot be shadowed).
    """
    if not requirements:
        return []
    extra = index_options(indexes, allow_pypi)
    stubs, excluded = split_provided(provided)
    stub_names = {str(canonicalize_name(s.name)) for s in stubs}
    uv_platform = target.uv_platform()
    with tempfile.TemporaryDirectory(prefix="lockdock-uv-") as scratch:
        work = Path(scratch)
        (work / "requirements.in").write_text("\n".join(requirements) + "\n", encoding="utf-8")
        common = [
            "pip", "compile", "requirements.in",
            "--no-config",
            "--python", sys.executable,
            "--python-version", target.python_version,
            "--python-platform", uv_platform,
            "--only-binary", ":all:",
            "--no-header",
            "--quiet",
        ]  # fmt: skip
        if stubs:
            index = work / "conda-provided"
            _write_stub_index(index, stubs)
            common += [
                "--index", f"conda-provided={index.as_uri()}",
                "--index-strategy", "first-index",
            ]  # fmt: skip
        if extra:
            common += [*extra, "--index-strategy", "first-index"] if not stubs else extra
        if excluded:
            (work / "excludes.txt").write_text("\n".join(excluded) + "\n", encoding="utf-8")
            common += ["--excludes", "excludes.txt"]
        locked = _uv([*common, "--format", "pylock.toml", "-o", "pylock.toml"], work)
        if locked.returncode != 0:
            raise _uv_failure(locked.stderr, target, requirements)
        graph_run = _uv(
            [*common, "--format", "requirements.txt", "--annotation-style", "line",
             "-o", "requirements.txt"],
            work,
        )  # fmt: skip
        if graph_run.returncode != 0:
            raise _uv_failure(graph_run.stderr, target, requirements)
        packages = parse_pylock((work / "pylock.toml").read_text(encoding="utf-8"), target,
                                stub_names)  # fmt: skip
        graph = parse_via_graph((work / "requirements.txt").read_text(encoding="utf-8"))
    return sorted(
        (
            PipPackage(
                name=p.name,
                version=p.version,
                url=p.url,
                sha256=p.sha256,
                dependencies={d: "*" for d in sorted(graph.get(p.name, ()))},
            )
            for p in packages
        ),
        key=lambda p: p.name,
    )
