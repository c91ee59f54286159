"""Bad inputs, as a new user makes them, across every command (issue 11).

Each case builds a small project (environment.yml, a cpu flavor, a lock pinning two tiny
hand-made conda packages served from ``file://`` URLs), spoils one thing, runs the CLI and
asserts: the documented exit code, no traceback, the culprit named in the message, and every
file under the test's folder byte-identical before and after (which also proves that nothing
was created outside the store). Read-only cases run the CLI in a private mount namespace
with the folder bind-mounted read-only (``unshare --mount``): we run as root, so ``chmod``
would prove nothing.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockdock.cli import main
from lockdock.installer import prefix as prefix_mod
from lockdock.workspace import Workspace
from tests.fixtures.channel import write_project
from tests.helpers import http_server

ENV = """\
name: demo
channels:
  - file:///nonexistent-channel
platforms:
  - linux-64
dependencies:
  - hello
"""


# --- the project every case starts from ----------------------------------------------


def conda_package(directory: Path, name: str, version: str, depends: tuple[str, ...] = (),
                  index_version: str | None = None) -> Path:
    """A minimal real ``.tar.bz2`` conda package (``info/index.json``, ``info/paths.json``,
    one file); ``index_version`` makes its index.json disagree with its file name."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = f"{name} {version}\n".encode()
    members = {
        "info/index.json": json.dumps({
            "name": name, "version": index_version or version, "build": "0",
            "build_number": 0, "depends": list(depends), "subdir": "linux-64",
            "platform": "linux", "arch": "x86_64", "timestamp": 0,
        }).encode(),
        "info/paths.json": json.dumps({"paths_version": 1, "paths": [{
            "_path": f"share/{name}/version", "path_type": "hardlink",
            "sha256": hashlib.sha256(payload).hexdigest(), "size_in_bytes": len(payload),
        }]}).encode(),
        f"share/{name}/version": payload,
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mtime = len(data), 0
            archive.addfile(info, io.BytesIO(data))
    path = directory / f"{name}-{version}-0.tar.bz2"
    path.write_bytes(bz2.compress(raw.getvalue()))
    return path


def entry(path: Path, name: str, version: str,
          depends: dict[str, str] | None = None) -> dict[str, Any]:
    data = path.read_bytes()
    return {
        "name": name, "version": version, "manager": "conda", "platform": "linux-64",
        "dependencies": depends or {}, "url": path.as_uri(),
        "hash": {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()},
        "category": "main", "optional": False,
    }


def lock_data(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 1,
        "metadata": {
            "content_hash": {"linux-64": "0" * 64},
            "channels": [{"url": "file:///nonexistent-channel", "used_env_vars": []}],
            "platforms": ["linux-64"], "sources": ["environment.yml"],
        },
        "package": entries,
    }


@dataclass
class Project:
    root: Path  # the test's folder: everything in it is watched
    project: Path
    pkgs: Path
    entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lock(self) -> Path:
        return self.project / "conda-lock.yml"

    @property
    def store(self) -> Path:
        return Workspace(self.project).store

    def write_lock(self, data: dict[str, Any] | None = None) -> None:
        self.lock.write_text(yaml.safe_dump(data or lock_data(self.entries), sort_keys=False),
                             encoding="utf-8")

    def edit_lock(self, change: Callable[[dict[str, Any]], object]) -> None:
        data = lock_data(json.loads(json.dumps(self.entries)))
        change(data)
        self.write_lock(data)


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    root = tmp_path / "watched"
    project = write_project(root / "project", ENV)
    pkgs = root / "pkgs"
    python = conda_package(pkgs, "libzero", "1.0")
    hello = conda_package(pkgs, "hello", "1.0", depends=("libzero",))
    result = Project(root, project, pkgs, [
        entry(python, "libzero", "1.0"),
        entry(hello, "hello", "1.0", {"libzero": "*"}),
    ])
    result.write_lock()
    return result


#: The stores, the one place a failed command may leave verified downloads.
STORES = ("store/", "project/.lockdock/store/")


def snapshot(root: Path) -> dict[str, object]:
    """Every path under ``root`` but the stores' contents, with its bytes (links: their
    target; folders: 'dir'). Equal before and after: nothing changed or appeared outside a
    store (a path escaping the store, ``../../evil``, would show here)."""
    state: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(STORES):
            continue
        if path.is_symlink():
            state[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            state[rel] = "dir"
        else:
            state[rel] = path.read_bytes()
    return state


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(argv)
    captured = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 1), captured.out + captured.err


def run_read_only(argv: list[str], read_only: Path, cwd: Path,
                  env: dict[str, str] | None = None) -> tuple[int, str]:
    """The CLI in a private mount namespace where ``read_only`` is a read-only bind mount."""
    script = ('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && '
              'shift 0 && exec "$@"')
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(read_only),
         sys.executable, "-c", "from lockdock.cli import main; main()", *argv],
        cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})},
        check=False, timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _unshare_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"unshare --mount is not permitted here: {probe.stderr.decode().strip()}"
    return None


def assert_clean_failure(code: int, output: str, expected: int, culprit: str) -> None:
    assert code == expected, f"exit {code}, expected {expected}:\n{output}"
    assert "Traceback" not in output, output
    assert culprit in output, f"{culprit!r} not named in:\n{output}"


# --- the cases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # after `-C <project>`; {lock} {store} {root} {prefix} substituted
    code: int
    culprit: str  # substring the message must contain; {root} substituted
    setup: Callable[[Project], object] = lambda p: None
    read_only: str | None = None  # folder (relative to the watched root) mounted read-only
    env: tuple[tuple[str, str], ...] = ()


def latin1(path: str) -> Callable[[Project], object]:
    def setup(p: Project) -> None:
        target = p.project / path
        target.parent.mkdir(parents=True, exist_ok=True)
        text = target.read_text(encoding="utf-8") if target.exists() else "x: 1\n"
        target.write_bytes((text + "# café\n").encode("latin-1"))
    return setup


def utf16_lock(p: Project) -> None:
    p.lock.write_bytes(p.lock.read_text(encoding="utf-8").encode("utf-16"))


def missing_lock(p: Project) -> None:
    p.lock.unlink()


def env_text(text: str) -> Callable[[Project], object]:
    def setup(p: Project) -> None:
        (p.project / "environment.yml").write_text(text, encoding="utf-8")
    return setup


def lock_raw(text: Callable[[Project], str]) -> Callable[[Project], object]:
    def setup(p: Project) -> None:
        p.lock.write_text(text(p), encoding="utf-8")
    return setup


def duplicated_entry(p: Project) -> None:
    other = conda_package(p.pkgs / "other", "hello", "2.0")
    p.edit_lock(lambda d: d["package"].append(entry(other, "hello", "2.0")))


def missing_dependency(p: Project) -> None:
    p.edit_lock(lambda d: d["package"].pop(0))  # libzero, which hello depends on


def lock_version(value: object) -> Callable[[Project], object]:
    def setup(p: Project) -> None:
        def change(d: dict[str, Any]) -> None:
            if value is None:
                del d["version"]
            else:
                d["version"] = value
        p.edit_lock(change)
    return setup


def hash_value(algorithm: str, value: str) -> Callable[[Project], object]:
    def setup(p: Project) -> None:
        p.edit_lock(lambda d: d["package"][1]["hash"].__setitem__(algorithm, value))
    return setup


def url_value(value: str) -> Callable[[Project], object]:
    def setup(p: Project) -> None:
        p.edit_lock(lambda d: d["package"][1].__setitem__("url", value))
    return setup


def vpkgs(text: str, encoding: str = "utf-8") -> Callable[[Project], object]:
    def setup(p: Project) -> None:
        (p.project / "images" / "cpu" / "virtual-packages.yml").write_bytes(text.encode(encoding))
    return setup


def images_lock(data: bytes) -> Callable[[Project], object]:
    def setup(p: Project) -> None:
        Workspace(p.project).images_lock_path.write_bytes(data)
    return setup


def dockerfile(text: str, name: str = "Dockerfile.app") -> Callable[[Project], object]:
    def setup(p: Project) -> None:
        (p.project / name).write_text(text, encoding="utf-8")
    return setup


def foreign_conda_prefix(p: Project) -> None:
    meta = p.root / "prefix" / "conda-meta"
    meta.mkdir(parents=True)
    (meta / "conda-24.1-py_0.json").write_text('{"name": "conda", "version": "24.1", '
                                                '"build": "py_0"}', encoding="utf-8")


def foreign_dir(p: Project) -> None:
    (p.root / "prefix").mkdir()
    (p.root / "prefix" / "data.txt").write_text("mine\n", encoding="utf-8")


def lying_archive(p: Project) -> None:
    lying = conda_package(p.pkgs / "lying", "hello", "1.0", depends=("libzero",),
                          index_version="9.9")
    p.edit_lock(lambda d: d["package"].__setitem__(1, entry(lying, "hello", "1.0",
                                                            {"libzero": "*"})))


def directory_at_store_file(p: Project) -> None:
    sha = p.entries[1]["hash"]["sha256"]
    (p.store / "sha256" / sha / "hello-1.0-0.tar.bz2").mkdir(parents=True)


def project_subdir(name: str) -> Callable[[Project], object]:
    def setup(p: Project) -> None:
        (p.root / name).mkdir(parents=True, exist_ok=True)
    return setup


DUP_ENV = ENV + "dependencies:\n  - other\n"
VALID_IMAGES_LOCK = json.dumps({"version": 1, "images": [{
    "flavor": "cpu", "repository": "127.0.0.1:5000/x", "digest": "sha256:" + "a" * 64,
    "reference": "127.0.0.1:5000/x:cpu-abc@sha256:" + "a" * 64}]}).encode()
GOOD_VPKGS = 'subdirs:\n  linux-64:\n    packages:\n      __glibc: "2.28"\n'

CASES = [
    # 1. not UTF-8: exit 3 naming the file and the byte
    Case("env-latin1-lock-check", ("lock", "--check"), 3, "environment.yml is not UTF-8",
         latin1("environment.yml")),
    Case("env-latin1-lock", ("lock",), 3, "byte 0xe9 at line 8", latin1("environment.yml")),
    Case("env-latin1-build", ("build", "cpu"), 3, "not UTF-8", latin1("environment.yml")),
    Case("vpkgs-latin1-lock-check", ("lock", "--check"), 3, "virtual-packages.yml is not UTF-8",
         vpkgs(GOOD_VPKGS + "# café\n", "latin-1")),
    Case("lock-utf16-lock-check", ("lock", "--check"), 3, "conda-lock.yml is not UTF-8",
         utf16_lock),
    Case("lock-utf16-fetch", ("fetch",), 3, "UTF-16", utf16_lock),
    Case("lock-utf16-fetch-check", ("fetch", "--check"), 3, "byte 0xff at line 1", utf16_lock),
    Case("lock-utf16-install", ("install", "{lock}", "--prefix", "{prefix}", "--platform",
                                "linux-64"), 3, "conda-lock.yml is not UTF-8", utf16_lock),
    Case("lock-utf16-verify", ("install", "{lock}", "--prefix", "{prefix}", "--verify-only",
                               "--platform", "linux-64"), 3, "not UTF-8", utf16_lock),
    Case("lock-utf16-sbom", ("sbom", "cpu", "--platform", "linux-64"), 3, "not UTF-8",
         utf16_lock),
    Case("images-lock-latin1-devcontainer", ("devcontainer", "cpu"), 3,
         "images.lock.json is not UTF-8", images_lock(b'{"images": [], "x": "caf\xe9"}')),
    Case("dockerfile-latin1-pin", ("pin", "127.0.0.1:9/x", "--file", "{root}/project/"
                                   "Dockerfile.app"), 3, "Dockerfile.app is not UTF-8",
         latin1("Dockerfile.app")),
    # 8. duplicate keys: exit 3 naming key and line
    Case("env-dup-deps-lock-check", ("lock", "--check"), 3, "duplicate key `dependencies` at "
         "line 8 (first at line 6)", env_text(DUP_ENV)),
    Case("env-dup-deps-lock", ("lock",), 3, "duplicate key `dependencies`", env_text(DUP_ENV)),
    Case("env-dup-deps-verify-repro", ("verify-repro", "cpu"), 3, "duplicate key "
         "`dependencies`", env_text(DUP_ENV)),
    Case("lock-dup-metadata-fetch", ("fetch",), 3, "duplicate key `metadata`",
         lock_raw(lambda p: p.lock.read_text() + "metadata: {}\n")),
    Case("lock-dup-key-install", ("install", "{lock}", "--prefix", "{prefix}", "--platform",
                                  "linux-64"), 3, "duplicate key `package`",
         lock_raw(lambda p: p.lock.read_text() + "package: []\n")),
    Case("lock-dup-key-sbom", ("sbom", "cpu", "--platform", "linux-64"), 3, "duplicate key",
         lock_raw(lambda p: p.lock.read_text() + "version: 1\n")),
    Case("vpkgs-dup-key", ("lock", "--check"), 3, "duplicate key `subdirs`",
         vpkgs(GOOD_VPKGS + GOOD_VPKGS)),
    Case("compose-dup-key-pin", ("pin", "127.0.0.1:9/x", "--file",
                                 "{root}/project/compose.yml"), 3, "duplicate key `image`",
         dockerfile("services:\n  a:\n    image: 127.0.0.1:9/x:1\n    image: other\n",
                    "compose.yml")),
    # malformed YAML / JSON
    Case("env-malformed", ("lock", "--check"), 3, "environment.yml is not valid YAML at line",
         env_text("dependencies: [\n")),
    Case("lock-malformed-sbom", ("sbom", "cpu", "--platform", "linux-64"), 3,
         "conda-lock.yml is not valid YAML", lock_raw(lambda p: "package: [\n")),
    Case("lock-not-a-lock", ("fetch",), 3, "is not a conda-lock file",
         lock_raw(lambda p: "- a\n")),
    Case("images-lock-malformed", ("devcontainer", "cpu"), 3, "images.lock.json is not valid "
         "JSON", images_lock(b"{")),
    Case("images-lock-no-reference", ("devcontainer", "cpu"), 3, "reference",
         images_lock(json.dumps({"version": 1, "images": [{
             "flavor": "cpu", "repository": "r", "digest": "sha256:" + "a" * 64}]}).encode())),
    # 9. a missing lock is exit 6 everywhere
    Case("no-lock-fetch", ("fetch",), 6, "conda-lock.yml", missing_lock),
    Case("no-lock-fetch-check", ("fetch", "--check"), 6, "conda-lock.yml", missing_lock),
    Case("no-lock-install", ("install", "{lock}", "--prefix", "{prefix}", "--platform",
                             "linux-64"), 6, "conda-lock.yml does not exist", missing_lock),
    Case("no-lock-verify", ("install", "{lock}", "--prefix", "{prefix}", "--verify-only",
                            "--platform", "linux-64"), 6, "does not exist", missing_lock),
    Case("no-lock-sbom", ("sbom", "cpu", "--platform", "linux-64"), 6, "conda-lock.yml",
         missing_lock),
    Case("no-lock-lock-check", ("lock", "--check"), 6, "no lock file", missing_lock),
    Case("no-lock-publish", ("publish", "cpu", "--registry", "127.0.0.1:9/x"), 6,
         "conda-lock.yml", missing_lock),
    # 4. locks that must be refused (exit 3, before anything is written)
    Case("dup-entry-fetch", ("fetch",), 3, "locks conda package hello for linux-64 a second "
         "time", duplicated_entry),
    Case("dup-entry-install", ("install", "{lock}", "--prefix", "{prefix}", "--platform",
                               "linux-64"), 3, "a second time", duplicated_entry),
    Case("dup-entry-lock-check", ("lock", "--check"), 3, "a second time", duplicated_entry),
    Case("dup-entry-sbom", ("sbom", "cpu", "--platform", "linux-64"), 3, "a second time",
         duplicated_entry),
    Case("missing-dep-fetch", ("fetch",), 3, "libzero (linux-64, needed by hello)",
         missing_dependency),
    Case("missing-dep-install", ("install", "{lock}", "--prefix", "{prefix}", "--platform",
                                 "linux-64"), 3, "needed by hello", missing_dependency),
    Case("missing-dep-lock-check", ("lock", "--check"), 3, "is incomplete", missing_dependency),
    Case("missing-dep-verify", ("install", "{lock}", "--prefix", "{prefix}", "--verify-only",
                                "--platform", "linux-64"), 3, "needed by hello",
         missing_dependency),
    Case("lock-version-2-fetch", ("fetch",), 3, "`version: 2`", lock_version(2)),
    Case("lock-version-9-install", ("install", "{lock}", "--prefix", "{prefix}", "--platform",
                                    "linux-64"), 3, "`version: 9`", lock_version(9)),
    Case("lock-version-missing-sbom", ("sbom", "cpu", "--platform", "linux-64"), 3,
         "`version: None`", lock_version(None)),
    Case("sha256-path-escape-fetch", ("fetch",), 3, "sha256 '../../evil/x' is not 64",
         hash_value("sha256", "../../evil/x")),
    Case("sha256-path-escape-fetch-check", ("fetch", "--check"), 3, "'../../evil/x'",
         hash_value("sha256", "../../evil/x")),
    Case("sha256-path-escape-install", ("install", "{lock}", "--prefix", "{prefix}",
                                        "--platform", "linux-64"), 3, "../../evil/x",
         hash_value("sha256", "../../evil/x")),
    Case("sha256-short", ("fetch",), 3, "is not 64 hexadecimal", hash_value("sha256", "ab" * 31)),
    Case("md5-short", ("fetch",), 3, "md5 'abc' is not 32", hash_value("md5", "abc")),
    Case("url-no-scheme-fetch", ("fetch",), 3, "url 'hello-1.0-0.tar.bz2' is not an absolute",
         url_value("hello-1.0-0.tar.bz2")),
    Case("url-no-scheme-install", ("install", "{lock}", "--prefix", "{prefix}", "--platform",
                                   "linux-64"), 3, "is not an absolute", url_value("pkgs/x")),
    Case("url-no-scheme-sbom", ("sbom", "cpu", "--platform", "linux-64"), 3,
         "is not an absolute", url_value("hello.tar.bz2")),
    Case("url-ftp", ("fetch",), 3, "ftp://h/hello-1.0-0.tar.bz2",
         url_value("ftp://h/hello-1.0-0.tar.bz2")),
    # 3 + 10. install refuses before touching the prefix
    Case("install-archive-lies", ("install", "{lock}", "--prefix", "{prefix}", "--platform",
                                  "linux-64", "--store", "{root}/store"), 7,
         "index.json says version '9.9'", lying_archive),
    Case("install-foreign-conda-prefix", ("install", "{lock}", "--prefix", "{prefix}",
                                          "--platform", "linux-64", "--store", "{root}/store"),
         8, "lockdock did not create", foreign_conda_prefix),
    Case("install-foreign-dir", ("install", "{lock}", "--prefix", "{prefix}", "--platform",
                                 "linux-64"), 8, "is not a conda prefix", foreign_dir),
    Case("install-unknown-platform", ("install", "{lock}", "--prefix", "{prefix}",
                                      "--platform", "osx-64"), 2, "no platform 'osx-64'"),
    Case("install-unknown-category", ("install", "{lock}", "--prefix", "{prefix}",
                                      "--platform", "linux-64", "--category", "dev"), 2,
         "no category dev"),
    Case("install-offline-missing", ("install", "{lock}", "--prefix", "{prefix}",
                                     "--platform", "linux-64", "--offline", "--store",
                                     "{root}/empty-store"), 7, "--offline and 2 artifact(s)",
         project_subdir("empty-store")),
    # 2. local file-system errors are not network errors
    Case("store-dir-at-file", ("fetch",), 16, "hello-1.0-0.tar.bz2", directory_at_store_file),
    # usage
    Case("fetch-unknown-flavor", ("fetch", "gpu"), 2, "Unknown flavor 'gpu'"),
    Case("sbom-unknown-flavor", ("sbom", "gpu"), 2, "Unknown flavor 'gpu'"),
    Case("fetch-unknown-platform", ("fetch", "--platform", "win-64"), 2, "win-64"),
    Case("devcontainer-not-published", ("devcontainer", "cpu"), 2, "no published image",
         images_lock(json.dumps({"version": 1, "images": []}).encode())),
    Case("devcontainer-differs", ("devcontainer", "cpu"), 2, "already exists and differs",
         lambda p: (images_lock(VALID_IMAGES_LOCK)(p),
                    (p.project / ".devcontainer").mkdir(),  # type: ignore[func-returns-value]
                    (p.project / ".devcontainer" / "devcontainer.json").write_text("{}\n"))),
    # 7. pin
    Case("pin-from-variable-only", ("pin", "127.0.0.1:9/x", "--file",
                                    "{root}/project/Dockerfile.app"), 15,
         "${{BASE}} is built from variables", dockerfile("ARG BASE\nFROM ${BASE}\n")),
    Case("pin-missing-file", ("pin", "127.0.0.1:9/x", "--file", "{root}/nope"), 2,
         "nope does not exist"),
    Case("pin-directory", ("pin", "127.0.0.1:9/x", "--file", "{root}/project"), 15,
         "is a directory"),
    Case("pin-digest-target", ("pin", "127.0.0.1:9/x@sha256:" + "a" * 64), 2,
         "already names a digest"),
    Case("pin-bad-jsonc", ("pin", "127.0.0.1:9/x", "--file",
                           "{root}/project/.devcontainer.json"), 15,
         "is not valid JSON (with comments)", dockerfile('{"image": ', ".devcontainer.json")),
    # 9. malformed environment variables: exit 2 naming them
    Case("sbom-bad-epoch", ("sbom", "cpu", "--platform", "linux-64"), 2, "SOURCE_DATE_EPOCH",
         env=(("SOURCE_DATE_EPOCH", "yesterday"),)),
]

READ_ONLY_CASES = [
    Case("sbom-output-read-only", ("sbom", "cpu", "--platform", "linux-64", "-o",
                                   "{root}/ro/sbom.json"), 16, "{root}/ro/sbom.json",
         project_subdir("ro"), read_only="ro"),
    Case("devcontainer-output-read-only", ("devcontainer", "cpu", "-o",
                                           "{root}/ro/devcontainer.json"), 16,
         "{root}/ro/devcontainer.json",
         lambda p: (project_subdir("ro")(p), images_lock(VALID_IMAGES_LOCK)(p)),
         read_only="ro"),
    Case("install-prefix-read-only", ("install", "{lock}", "--prefix", "{root}/ro/env",
                                      "--platform", "linux-64", "--store", "{root}/store"),
         8, "{root}/ro/env", project_subdir("ro"), read_only="ro"),
    Case("fetch-store-read-only", ("fetch", "--store", "{root}/ro"), 16, "read-only",
         project_subdir("ro"), read_only="ro"),
    Case("lock-project-read-only", ("lock",), 16, "cache", read_only="project"),
]


def _argv(case: Case, p: Project) -> list[str]:
    values = {"lock": str(p.lock), "store": str(p.store), "root": str(p.root),
              "prefix": str(p.root / "prefix")}
    return ["-C", str(p.project), *(a.format(**values) for a in case.argv)]


def _fill_store(p: Project, store: Path) -> None:
    for item in p.entries:
        target = store / "sha256" / item["hash"]["sha256"]
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(item["url"].removeprefix("file://"), target)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, proj: Project, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    if "--store" in case.argv and "{root}/store" in case.argv:
        _fill_store(proj, proj.root / "store")
    case.setup(proj)
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    before = snapshot(proj.root)
    code, output = run_cli(_argv(case, proj), capsys)
    assert_clean_failure(code, output, case.code, case.culprit.format(root=proj.root))
    assert snapshot(proj.root) == before
    assert not (proj.root.parent / "evil").exists()


@pytest.mark.parametrize("case", READ_ONLY_CASES, ids=[c.id for c in READ_ONLY_CASES])
def test_bad_input_read_only(case: Case, proj: Project) -> None:
    problem = _unshare_problem()
    if problem:
        pytest.skip(f"read-only cases need a private mount namespace: {problem}")
    if "{root}/store" in case.argv:
        _fill_store(proj, proj.root / "store")
    case.setup(proj)
    assert case.read_only is not None
    before = snapshot(proj.root)
    code, output = run_read_only(_argv(case, proj), proj.root / case.read_only, proj.root)
    assert_clean_failure(code, output, case.code, case.culprit.format(root=proj.root))
    assert snapshot(proj.root) == before


# --- cases that need more than one run or a server ----------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers every request with its class's ``answer(handler)`` (``serve``)."""

    answer: Callable[[http.server.BaseHTTPRequestHandler], None]

    def do_GET(self) -> None:
        type(self).answer(self)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(answer: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """``127.0.0.1:PORT`` answering every request with ``answer``."""
    handler = type("_Answering", (_Handler,), {"answer": staticmethod(answer)})
    with http_server(handler) as url:
        yield url.removeprefix("http://")


def fetch_from(
    proj: Project, answer: Callable[[http.server.BaseHTTPRequestHandler], None],
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, dict[str, str], dict[str, str]]:
    """``lockdock fetch`` of ``proj`` with every lock URL pointed at a server answering with
    ``answer``: (exit code, output, the project's snapshot before, after without the store)."""
    with serve(answer) as host:
        proj.edit_lock(lambda d: [e.__setitem__("url", f"http://{host}/{Path(e['url']).name}")
                                  for e in d["package"]])
        before = snapshot(proj.root)
        code, output = run_cli(["-C", str(proj.project), "fetch"], capsys)
    after = snapshot(proj.root)
    return code, output, before, {k: v for k, v in after.items()
                                  if not k.startswith("project/.lockdock")}


def test_truncated_download_is_a_network_error_not_a_mismatch(
    proj: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lockdock.installer import download

    monkeypatch.setattr(download, "RETRY_PAUSES", (0.0, 0.0))
    requests: list[str] = []

    def half(handler: http.server.BaseHTTPRequestHandler) -> None:
        requests.append(handler.path)
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"x" * 10)  # then the connection closes: 990 bytes short

    code, output, before, after = fetch_from(proj, half, capsys)
    assert_clean_failure(code, output, 5, "990 more expected")
    assert "sha256 is" not in output  # not reported as a hash mismatch
    assert len(requests) == 2 * download.DOWNLOAD_ATTEMPTS  # retried as transient
    assert after == before
    assert not [k for k in snapshot(proj.root) if k.endswith(download.TEMP_SUFFIX)]


def _html(handler: http.server.BaseHTTPRequestHandler) -> None:
    body = b"<html><body>Registry UI</body></html>"
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command == "GET":
        handler.wfile.write(body)


@pytest.mark.parametrize("check", [False, True], ids=["pin", "pin-check"])
def test_html_200_is_not_a_registry(proj: Project, capsys: pytest.CaptureFixture[str],
                                    check: bool) -> None:
    with serve(_html) as host:
        dockerfile(f"FROM {host}/app:1\n")(proj)
        before = snapshot(proj.root)
        code, output = run_cli(["-C", str(proj.project), "pin", f"{host}/app", "--file",
                                str(proj.project / "Dockerfile.app"),
                                *(["--check"] if check else [])], capsys)
    assert_clean_failure(code, output, 13, "text/html")
    assert snapshot(proj.root) == before


def _registry(digest: str) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Docker-Content-Digest", digest)
        handler.send_header("Content-Type", "application/vnd.oci.image.index.v1+json")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def test_pin_writes_through_a_symlink(proj: Project, capsys: pytest.CaptureFixture[str]) -> None:
    digest = "sha256:" + "b" * 64
    with serve(_registry(digest)) as host:
        real = proj.root / "shared" / "Dockerfile"
        real.parent.mkdir()
        real.write_text(f"FROM {host}/app:1\n", encoding="utf-8")
        link = proj.project / "Dockerfile.app"
        link.symlink_to(real)
        code, output = run_cli(["-C", str(proj.project), "pin", f"{host}/app", "--file",
                                str(link)], capsys)
    assert code == 0, output
    assert link.is_symlink() and link.resolve() == real
    assert real.read_text(encoding="utf-8") == f"FROM {host}/app:1@{digest}\n"


def test_unexpected_exception_is_a_bug_report_not_a_traceback(
    proj: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from lockdock import fetch

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("synthetic")

    monkeypatch.setattr(fetch, "project_artifacts", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    code, output = run_cli(["-C", str(proj.project), "fetch"], capsys)
    assert_clean_failure(code, output, 1, "This is a bug in lockdock")
    crash = next(tmp_path.glob("lockdock-crash-*.txt"))
    assert str(crash) in output
    assert "ZeroDivisionError: synthetic" in crash.read_text(encoding="utf-8")
    assert "Traceback" in crash.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["LOCKDOCK_PUSH_ATTEMPTS", "LOCKDOCK_PUSH_BACKOFF"])
def test_malformed_push_setting_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                 name: str) -> None:
    from lockdock.errors import UsageError
    from lockdock.publish import DockerPusher as Pusher

    monkeypatch.setenv(name, "four")
    with pytest.raises(UsageError, match=f"{name}='four'") as refused:
        Pusher(client=object())
    assert refused.value.exit_code == 2


def test_force_installs_into_a_conda_prefix_lockdock_did_not_create(
    proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill_store(proj, proj.root / "store")
    prefix = proj.root / "prefix"
    argv = ["-C", str(proj.project), "install", str(proj.lock), "--prefix", str(prefix),
            "--platform", "linux-64", "--store", str(proj.root / "store")]
    code, output = run_cli(argv, capsys)
    assert code == 0, output
    assert (prefix / "conda-meta" / prefix_mod.PREFIX_MARKER).is_file()
    code, output = run_cli(argv, capsys)  # lockdock's own prefix: accepted again
    assert code == 0, output
    (prefix / "conda-meta" / prefix_mod.PREFIX_MARKER).unlink()  # as conda would leave it
    before = snapshot(proj.root)
    code, output = run_cli(argv, capsys)
    assert_clean_failure(code, output, 8, "lockdock did not create")
    assert snapshot(proj.root) == before
    code, output = run_cli([*argv, "--force"], capsys)
    assert code == 0, output
    assert (prefix / "share" / "hello" / "version").read_text() == "hello 1.0\n"
    assert (prefix / "conda-meta" / prefix_mod.PREFIX_MARKER).is_file()


def test_suite_size() -> None:
    """The issue asks for at least 60 bad-input cases across every command."""
    assert len(CASES) + len(READ_ONLY_CASES) + 1 + 2 + 2 >= 60
    commands = {c.argv[0] for c in CASES + READ_ONLY_CASES}
    assert commands >= {"lock", "fetch", "install", "sbom", "pin", "devcontainer", "publish"}


def test_pin_all_files_or_none_when_one_is_read_only(proj: Project) -> None:
    problem = _unshare_problem()
    if problem:
        pytest.skip(f"read-only cases need a private mount namespace: {problem}")
    with serve(_registry("sha256:" + "c" * 64)) as host:
        dockerfile(f"FROM {host}/x:1\n")(proj)
        (proj.root / "ro").mkdir()
        (proj.root / "ro" / "Dockerfile").write_text(f"FROM {host}/x:1\n", encoding="utf-8")
        before = snapshot(proj.root)
        code, output = run_read_only(
            ["-C", str(proj.project), "pin", f"{host}/x", "--file",
             str(proj.project / "Dockerfile.app"), "--file", str(proj.root / "ro" / "Dockerfile")],
            proj.root / "ro", proj.root)
    assert_clean_failure(code, output, 16, f"{proj.root}/ro/Dockerfile")
    assert snapshot(proj.root) == before  # the first file was not rewritten either


def test_readme_exit_codes_cover_every_error_class_and_case() -> None:
    """The README's table lists every exit code an error class has and every code the
    cases above expect (and nothing else)."""
    import re

    from lockdock import errors

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Exit codes", 1)[1]
    documented = {int(c) for c in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    classes = {cls.exit_code for cls in vars(errors).values()
               if isinstance(cls, type) and issubclass(cls, errors.LockdockError)}
    expected = {c.code for c in CASES + READ_ONLY_CASES}
    assert classes | expected | {0, errors.INTERRUPTED_EXIT} == documented
