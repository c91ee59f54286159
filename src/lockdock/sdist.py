"""Build a locked pure-Python sdist into a wheel, once, reproducibly (``lockdock fetch``).

Real ML locks pin source distributions (3 of 8 we tried: a pure-Python MIDI library,
``flash-attn``, a GitHub archive). The installer builds nothing -- it runs offline inside
image builds -- so ``fetch`` builds each sdist here and stores the wheel
(``lockdock.installer.built`` names the layout and the record the installer reads).

The build (``build_wheel``), in this order:

1. refuse, before any build, an sdist that needs a compiler or a CUDA toolchain
   (``native_reason``: C/C++/CUDA/Cython/Fortran/Rust sources, ``ext_modules`` /
   ``CUDAExtension`` in ``setup.py``, a compiling build backend), naming it, the reason and
   the way out: a wheel index (``pip-indexes`` in flavor.toml) or the conda package;
2. pin the build requirements (``[build-system] requires``, else setuptools as PEP 517's
   legacy default) to exact versions *with hashes*, wheels only, from the locked index
   (``uv pip compile --generate-hashes --only-binary :all:``);
3. ``uv build --wheel`` in an isolated environment, ``--build-constraints`` those pins with
   ``--require-hashes``, ``--no-config``, no cache, the locked index only,
   ``SOURCE_DATE_EPOCH`` fixed (zip timestamps), so two builds give one wheel hash;
4. the result must be one ``py*-none-any`` wheel of the sdist's name and version (a
   platform wheel means native code after all: refused the same way);
5. store the wheel content-addressed and write ``built/<sdist sha256>.json`` last
   (atomically): a build interrupted anywhere leaves no record, so it runs again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from lockdock.errors import InstallError
from lockdock.fsutil import atomic_write, file_digests
from lockdock.installer.built import BuiltWheel, is_sdist, read_built, record_path
from lockdock.installer.lockfile import LockedArtifact
from lockdock.installer.store import HASH_DIR, artifact_path

#: 1980-01-01: the earliest time a zip entry can hold (0 would make wheel builds fail).
SOURCE_DATE_EPOCH = "315532800"
DEFAULT_INDEX = "https://pypi.org/simple"
#: PEP 517's default for an sdist without ``[build-system]`` (uv and pip use the same).
LEGACY_BUILD_REQUIRES = ("setuptools>=40.8.0",)
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
NATIVE_SUFFIXES = {
    ".c": "C", ".h": "C", ".cc": "C++", ".cpp": "C++", ".cxx": "C++", ".hpp": "C++",
    ".cu": "CUDA", ".cuh": "CUDA", ".pyx": "Cython", ".pxd": "Cython", ".f": "Fortran",
    ".f90": "Fortran", ".rs": "Rust",
}  # fmt: skip
COMPILING_BACKENDS = ("scikit_build_core", "mesonpy", "maturin", "setuptools_rust", "cmake")
_SETUP_PY_NATIVE = re.compile(r"\b(ext_modules|Extension\(|CUDAExtension|CppExtension|cythonize)")
BUILD_TIMEOUT_S = 900


def way_out(name: str) -> str:
    return (
        f"Lock a wheel of {name} instead: add an index that has one to `pip-indexes` in "
        f"flavor.toml, or depend on the conda package of {name} (conda-forge builds it)."
    )


# --- plan (pure): what the sdist is -------------------------------------------------------


def _members(path: Path) -> tuple[list[str], dict[str, str]]:
    """(member names, {``setup.py``/``pyproject.toml`` at the top: text}) of an sdist."""
    wanted = {"setup.py", "pyproject.toml"}
    names: list[str] = []
    texts: dict[str, str] = {}

    def top_level(name: str) -> str | None:
        parts = PurePosixPath(name).parts
        return parts[1] if len(parts) == 2 and parts[1] in wanted else None

    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zipped:
                for info in zipped.infolist():
                    names.append(info.filename)
                    if key := top_level(info.filename):
                        texts[key] = zipped.read(info).decode("utf-8", "replace")
        else:
            with tarfile.open(path) as tarred:
                for member in tarred.getmembers():
                    names.append(member.name)
                    handle = tarred.extractfile(member) if member.isfile() else None
                    if handle is not None and (key := top_level(member.name)):
                        texts[key] = handle.read().decode("utf-8", "replace")
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as error:
        raise InstallError(f"{path} is not a readable sdist archive: {error}.") from None
    return names, texts


def build_system(pyproject: str | None) -> tuple[tuple[str, ...], str]:
    """(build requirements, backend) as PEP 517/518 read ``pyproject.toml``."""
    import tomllib

    if pyproject is None:
        return LEGACY_BUILD_REQUIRES, LEGACY_BACKEND
    try:
        table = tomllib.loads(pyproject).get("build-system") or {}
    except tomllib.TOMLDecodeError:
        table = {}
    if "requires" not in table:
        return LEGACY_BUILD_REQUIRES, LEGACY_BACKEND
    requires = tuple(str(r) for r in table.get("requires") or ())
    return requires, str(table.get("build-backend") or LEGACY_BACKEND)


def native_reason(names: Iterable[str], texts: dict[str, str]) -> str | None:
    """Why the sdist needs a compiler or CUDA toolchain, or None when it looks pure Python."""
    found: dict[str, list[str]] = {}
    for name in names:
        language = NATIVE_SUFFIXES.get(PurePosixPath(name).suffix.lower())
        if language:
            found.setdefault(language, []).append(PurePosixPath(name).name)
    if found:
        listing = "; ".join(f"{lang}: {', '.join(files[:3])}" for lang, files in found.items())
        return f"it contains {'/'.join(found)} sources ({listing})"
    setup = texts.get("setup.py", "")
    match = _SETUP_PY_NATIVE.search(setup)
    if match:
        return f"its setup.py builds extension modules ({match.group(1).rstrip('(')})"
    requires, backend = build_system(texts.get("pyproject.toml"))
    for marker in COMPILING_BACKENDS:
        if marker in backend or any(marker.replace("_", "-") in r.lower() for r in requires):
            return f"its build backend ({backend}, requires {', '.join(requires)}) compiles"
    return None


def _wheel_ok(filename: str, sdist: LockedArtifact) -> str | None:
    """None when ``filename`` is a pure wheel of the sdist's project and version."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    try:
        name, version, _, tags = parse_wheel_filename(filename)
    except ValueError:
        return f"{filename} is not a wheel"
    if canonicalize_name(name) != canonicalize_name(sdist.name):
        return f"the build made {filename}, not a wheel of {sdist.name}"
    if str(version) != str(sdist.version) and version.public != sdist.version:
        return f"the build made version {version}, the lock says {sdist.version}"
    if any(t.abi != "none" or t.platform != "any" for t in tags):
        return f"the build made a platform wheel ({filename}): it compiled native code"
    return None


# --- act (edges): pin, build, store -------------------------------------------------------


def _uv() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise InstallError("uv is not installed: lockdock builds sdists with it.") from None
        return found


def _run(args: Sequence[str], what: str, env: dict[str, str], stdin: str | None = None) -> str:
    try:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT_S,
            check=False, input=stdin,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise InstallError(f"{what} did not finish in {BUILD_TIMEOUT_S} s.") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise InstallError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def _build_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    env.update(SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PYTHONHASHSEED="0", UV_NO_CONFIG="1")
    return env


def build_wheel(
    sdist: LockedArtifact, sdist_path: Path, out_dir: Path, *, index: str = DEFAULT_INDEX,
    python: str | None = None,
) -> tuple[Path, dict[str, object]]:  # fmt: skip
    """Build ``sdist_path`` into one pure wheel in ``out_dir``; (wheel, build facts)."""
    names, texts = _members(sdist_path)
    reason = native_reason(names, texts)
    if reason:
        raise InstallError(
            f"pip sdist {sdist.name} {sdist.version} ({sdist.filename}) needs a compiler or "
            f"CUDA toolchain: {reason}. lockdock builds only pure-Python sdists. "
            + way_out(sdist.name)
        )
    requires, backend = build_system(texts.get("pyproject.toml"))
    python = python or sys.executable
    uv, env = _uv(), _build_env()
    what = f"Building pip sdist {sdist.name} {sdist.version} ({sdist.filename})"
    out_dir.mkdir(parents=True, exist_ok=True)
    pins = out_dir / "build-constraints.txt"
    pins.write_text("", encoding="utf-8")
    if requires:
        _run(
            [uv, "pip", "compile", "-", "--generate-hashes", "--only-binary", ":all:",
             "--no-header", "--no-annotate", "--no-config", "--quiet", "--index-url", index,
             "--python", python, "-o", str(pins)],
            f"{what}: pinning its build requirements ({', '.join(requires)})", env,
            stdin="\n".join(requires) + "\n",
        )  # fmt: skip
    wheels = out_dir / "wheel"
    _run(
        [uv, "build", str(sdist_path), "--wheel", "--out-dir", str(wheels),
         "--build-constraints", str(pins), "--require-hashes", "--no-config", "--no-cache",
         "--index-url", index, "--python", python, "--no-progress", "--no-create-gitignore"],
        what, env,
    )  # fmt: skip
    built = sorted(p for p in wheels.glob("*.whl"))
    if len(built) != 1:
        raise InstallError(f"{what}: expected one wheel, the build made {len(built)}.")
    problem = _wheel_ok(built[0].name, sdist)
    if problem:
        raise InstallError(f"{what}: {problem}. " + way_out(sdist.name))
    facts: dict[str, object] = {
        "backend": backend,
        "requirements": [  # the pins, hashes included: what the build environment held
            line.strip().rstrip("\\").strip()
            for line in pins.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ],
        "python": python_version(python),
        "source_date_epoch": SOURCE_DATE_EPOCH,
        "index": index,
    }
    return built[0], facts


def python_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout.strip()


def ensure_built(
    sdist: LockedArtifact, store: Path, *, index: str = DEFAULT_INDEX, python: str | None = None
) -> BuiltWheel:
    """The wheel built from ``sdist`` (which must be in the store): recorded, else built now."""
    existing = read_built(store, sdist)
    if existing is not None and artifact_path(store, existing.artifact).is_file():
        return existing
    sdist_path = artifact_path(store, sdist)
    with tempfile.TemporaryDirectory(prefix=".build.", dir=_mkdir(Path(store))) as tmp:
        wheel, facts = build_wheel(sdist, sdist_path, Path(tmp), index=index, python=python)
        digest = file_digests(wheel, ("sha256",))["sha256"]
        target = Path(store) / HASH_DIR / digest / wheel.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file():
            staged = target.parent / f".{wheel.name}.{os.getpid()}.part"
            shutil.copyfile(wheel, staged)
            os.chmod(staged, 0o644)
            os.replace(staged, target)
    built = BuiltWheel(sdist, wheel.name, digest, facts)
    record = record_path(store, sdist.sha256 or "")
    record.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(record) as handle:
        handle.write(built.to_json())
    return built


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_sdists(
    artifacts: Iterable[LockedArtifact], store: Path, *, index: str = DEFAULT_INDEX
) -> list[BuiltWheel]:
    """Every locked sdist of ``artifacts`` built (once per sdist sha256)."""
    unique: dict[str, LockedArtifact] = {}
    for artifact in artifacts:
        if is_sdist(artifact) and artifact.sha256:
            unique.setdefault(artifact.sha256, artifact)
    return [ensure_built(a, store, index=index) for _, a in sorted(unique.items())]


def unbuilt(artifacts: Iterable[LockedArtifact], store: Path) -> list[LockedArtifact]:
    """Locked sdists with no built wheel in the store (``fetch --check``)."""
    missing = []
    for artifact in artifacts:
        if not is_sdist(artifact):
            continue
        built = read_built(store, artifact)
        if built is None or not artifact_path(store, built.artifact).is_file():
            missing.append(artifact)
    return missing


__all__ = ["build_sdists", "build_wheel", "ensure_built", "native_reason", "unbuilt"]
