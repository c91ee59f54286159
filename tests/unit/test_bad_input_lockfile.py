"""Bad conda-lock.yml and @EXPLICIT locks (findings 5-8, 12): every malformed lock is refused
when it is read (exit 3, naming the file and the key or line), before any command writes
anything; a directory or a symlink loop where the lock should be is a local file problem
(exit 16), not a missing lock.

The CLI cases use the project of tests/unit/test_bad_input.py: its ``proj`` lock holds
``libzero`` (entry #1) and ``hello`` (entry #2, depends on libzero).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lockdock.errors import LocalFileError, SpecError
from lockdock.installer.lockfile import (
    check_platform,
    lock_exists,
    parse_lock,
    read_lock,
    usable_filename,
)
from tests.unit.test_bad_input import (  # noqa: F401  (proj: the fixture)
    Project,
    assert_clean_failure,
    proj,
    run_cli,
    snapshot,
)

MD5 = "a" * 32
FETCH = ("fetch",)
FETCH_CHECK = ("fetch", "--check")
LOCK_CHECK = ("lock", "--check")
SBOM = ("sbom", "cpu", "--platform", "linux-64")


def edit(change: Callable[[dict[str, Any]], object]) -> Callable[[Project], None]:
    def setup(p: Project) -> None:
        p.edit_lock(change)
    return setup


def meta(key: str, value: object) -> Callable[[Project], None]:
    return edit(lambda d: d["metadata"].__setitem__(key, value))


def field(index: int, key: str, value: object) -> Callable[[Project], None]:
    return edit(lambda d: d["package"][index].__setitem__(key, value))


def every_platform(value: str) -> Callable[[Project], None]:
    def change(d: dict[str, Any]) -> None:
        d["metadata"]["platforms"] = [value]
        d["metadata"]["content_hash"] = {value: "x"}
        for item in d["package"]:
            item["platform"] = value
    return edit(change)


def explicit(*lines: str) -> Callable[[Project], None]:
    def setup(p: Project) -> None:
        p.lock.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return setup


# (id, argv after `-C <project>`, setup, culprit); every case: exit 3, nothing written
CASES: list[tuple[str, tuple[str, ...], Callable[[Project], None], str]] = [
    # 5. metadata fields of the wrong type
    ("content-hash-list-fetch-check", FETCH_CHECK, meta("content_hash", ["x"]),
     "`metadata.content_hash` is a list ['x']; expected a mapping"),
    ("content-hash-list-lock-check", LOCK_CHECK, meta("content_hash", ["x"]),
     "`metadata.content_hash`"),
    ("content-hash-list-sbom", SBOM, meta("content_hash", ["x"]), "`metadata.content_hash`"),
    ("content-hash-str-fetch", FETCH, meta("content_hash", "abc"),
     "`metadata.content_hash` is the string 'abc'"),
    ("content-hash-value-list", FETCH, meta("content_hash", {"linux-64": ["x"]}),
     "the hash of linux-64 is a list"),
    ("platforms-int-fetch", FETCH, meta("platforms", 5), "`metadata.platforms` is the number 5"),
    ("platforms-str-sbom", SBOM, meta("platforms", "linux-64"),
     "`metadata.platforms` is the string 'linux-64'; expected a list"),
    ("channels-int-fetch", FETCH, meta("channels", 5), "`metadata.channels` is the number 5"),
    ("channels-no-url-fetch", FETCH, meta("channels", [{"x": 1}]),
     "channel #1 is a mapping {'x': 1}; expected a channel name or URL, or a mapping with `url`"),
    ("sources-int-lock-check", LOCK_CHECK, meta("sources", 5),
     "`metadata.sources` is the number 5"),
    ("metadata-list", FETCH, edit(lambda d: d.__setitem__("metadata", [1])),
     "`metadata` is a list [1]; expected a mapping"),
    # 6. a NUL byte (%00) in the file name
    ("url-nul-fetch", FETCH, field(0, "url", "file:///tmp/chan/noarch/a%00b.conda"),
     "url 'file:///tmp/chan/noarch/a%00b.conda' has no usable file name"),
    ("url-nul-fetch-check", FETCH_CHECK, field(0, "url", "file:///tmp/chan/noarch/a%00b.conda"),
     "has no usable file name"),
    # 7. platform names become file names: only known conda platforms
    ("platform-escape-render", ("render", "cpu"), every_platform("../../evil"),
     "platform '../../evil' is not a conda platform lockdock knows (linux-64,"),
    ("platform-escape-render-env", ("render", "cpu", "--kind", "env"),
     every_platform("../../evil"), "'../../evil' is not a conda platform"),
    ("platform-escape-sbom", ("sbom", "cpu", "--platform", "../../evil"),
     every_platform("../../evil"), "'../../evil' is not a conda platform"),
    ("entry-platform-escape", ("render", "cpu"), field(1, "platform", "../../evil"),
     "package entry #2 (hello 1.0): platform '../../evil' is not a conda platform"),
    ("entry-platform-unlisted", FETCH, field(1, "platform", "osx-64"),
     "package entry #2 (hello 1.0) is for platform osx-64, which `metadata.platforms` does "
     "not list (linux-64)"),
    ("content-hash-platform-escape", ("render", "cpu"),
     meta("content_hash", {"linux-64": "x", "../evil": "y"}),
     "`metadata.content_hash`: platform '../evil'"),
    ("explicit-header-platform-escape", ("render", "cpu"),
     explicit("# platform: ../../evil", "@EXPLICIT", f"https://h/linux-64/a-1-0.conda#{MD5}"),
     "line 1 (`# platform:`): platform '../../evil' is not a conda platform"),
    ("explicit-url-subdir-unknown", FETCH_CHECK,
     explicit("@EXPLICIT", f"https://h/evil/a-1-0.conda#{MD5}"),
     "its URLs' subdir): platform 'evil' is not a conda platform"),
    # 8. entries accepted silently or judged inconsistently
    ("categories-str-sbom", SBOM, field(1, "categories", "main"),
     "package entry #2 (hello 1.0): `categories` is the string 'main'; expected a list"),
    ("categories-str-install", ("install", "{lock}", "--prefix", "{prefix}", "--platform",
                                "linux-64", "--category", "m"),
     field(1, "categories", "main"), "`categories` is the string 'main'"),
    ("name-null-sbom", SBOM, field(1, "name", None),
     "package entry #2: `name` is empty (null); expected a non-empty string"),
    ("version-float-fetch", FETCH, field(1, "version", 1.0),
     "`version` is the number 1.0; expected a non-empty string"),
    ("name-missing-fetch", FETCH, edit(lambda d: d["package"][1].pop("name")),
     "package entry #2 lacks `name`"),
    ("manager-npm-fetch", FETCH, field(1, "manager", "npm"),
     "(hello 1.0): `manager` is 'npm'; expected conda or pip"),
    ("manager-npm-lock-check", LOCK_CHECK, field(1, "manager", "npm"), "`manager` is 'npm'"),
    ("manager-npm-sbom", SBOM, field(1, "manager", "npm"), "`manager` is 'npm'"),
    ("hash-list-fetch", FETCH, field(1, "hash", ["x"]),
     "(hello 1.0): `hash` is a list ['x']; expected a mapping"),
    ("dependencies-list-fetch", FETCH, field(1, "dependencies", ["libzero"]),
     "(hello 1.0): `dependencies` is a list ['libzero']; expected a mapping"),
    ("entry-not-mapping", FETCH, edit(lambda d: d["package"].append("hello")),
     "package entry #3 is the string 'hello'; expected a mapping"),
    ("package-null-lock-check", LOCK_CHECK, edit(lambda d: d.__setitem__("package", None)),
     "`package` is empty (null); expected a list"),
    ("package-null-sbom", SBOM, edit(lambda d: d.__setitem__("package", None)),
     "`package` is empty (null)"),
    ("package-mapping-lock-check", LOCK_CHECK, edit(lambda d: d.__setitem__("package", {})),
     "`package` is a mapping {}"),
    ("url-no-file-name-fetch-check", FETCH_CHECK, field(1, "url", "https://example.invalid/"),
     "url 'https://example.invalid/' has no usable file name"),
    ("url-bad-ipv6-fetch", FETCH, field(1, "url", "http://[x/hello-1.0-0.tar.bz2"),
     "is not an absolute https/http/file URL"),
    ("explicit-foo-scheme-sbom", SBOM,
     explicit("# platform: linux-64", "@EXPLICIT", f"foo://h/linux-64/a-1-0.conda#{MD5}"),
     "line 3 (a 1): url 'foo://h/linux-64/a-1-0.conda' is not an absolute https/http/file"),
    ("explicit-ftp-scheme-fetch", FETCH,
     explicit("# platform: linux-64", "@EXPLICIT", f"ftp://h/linux-64/b-1-0.conda#{MD5}"),
     "url 'ftp://h/linux-64/b-1-0.conda' is not an absolute"),
    ("explicit-pip-ftp-scheme", FETCH_CHECK,
     explicit("# platform: linux-64", "@EXPLICIT", f"https://h/linux-64/a-1-0.conda#{MD5}",
              f"# pip b @ ftp://h/b-1.0-py3-none-any.whl#sha256={'b' * 64}"),
     "line 4 (b 1.0): url 'ftp://h/b-1.0-py3-none-any.whl' is not an absolute"),
    ("explicit-duplicate-fetch-check", FETCH_CHECK,
     explicit("# platform: linux-64", "@EXPLICIT", f"https://h/linux-64/a-1-0.conda#{MD5}",
              f"https://h/linux-64/a-2-0.conda#{MD5}"),
     "line 4 locks conda package a for linux-64 a second time (2, https://h/linux-64/a-2-0"
     ".conda; line 3 says 1"),
]


@pytest.mark.parametrize(("argv", "setup", "culprit"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_malformed_lock_is_refused_when_read(
    argv: tuple[str, ...], setup: Callable[[Project], None], culprit: str,
    proj: Project, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    setup(proj)
    before = snapshot(proj.root)
    values = {"lock": str(proj.lock), "prefix": str(proj.root / "prefix")}
    code, output = run_cli(["-C", str(proj.project), *(a.format(**values) for a in argv)],
                           capsys)
    assert_clean_failure(code, output, SpecError.exit_code, culprit)
    assert str(proj.lock) in output or "conda-lock.yml" in output
    assert snapshot(proj.root) == before
    assert not (proj.root.parent / "evil").exists()
    assert not (proj.project.parent / "evil.lock").exists()


def test_an_explicit_lock_with_one_entry_per_package_still_reads(tmp_path: Path) -> None:
    text = ("# platform: linux-64\n@EXPLICIT\n"
            f"https://h/linux-64/a-1-0.conda#{MD5}\nhttps://h/noarch/b-1-0.conda#{MD5}\n"
            f"https://h/linux-64/a-1-0.conda#{MD5}\n")  # the same line twice: one artifact
    lock = parse_lock(text.encode(), tmp_path / "x.lock")
    assert sorted((a.name, a.version) for a in lock.artifacts) == [("a", "1"), ("b", "1")]
    assert lock.platforms == ("linux-64",)


# --- the pure checks ------------------------------------------------------------------


def test_the_lock_of_an_empty_environment_reads(tmp_path: Path) -> None:
    """``dependencies: []`` locks to ``package: []`` (conda-lock's writer, through `lockdock
    lock`): the reader must take back what the writer writes, not send the user to re-lock."""
    path = tmp_path / "conda-lock.yml"
    path.write_text("version: 1\nmetadata:\n  content_hash: {linux-64: abc}\n"
                    "  channels: [{url: conda-forge, used_env_vars: []}]\n"
                    "  platforms: [linux-64]\n  sources: [environment.yml]\npackage: []\n")
    lock = read_lock(path)
    assert lock.artifacts == () and lock.platforms == ("linux-64",)


@pytest.mark.parametrize("value", ["linux-64", "linux-aarch64", "osx-arm64", "win-64"])
def test_check_platform_accepts_conda_platforms(value: str) -> None:
    assert check_platform(value, "where") == value


@pytest.mark.parametrize("value", ["../../evil", "linux/amd64", "noarch", "", 5, None])
def test_check_platform_refuses_anything_else_naming_where_and_the_known_ones(
    value: object,
) -> None:
    with pytest.raises(SpecError, match=r"^lock\.yml: `x`: platform .* is not a conda "
                                        r"platform lockdock knows \(linux-64, linux-aarch64"):
        check_platform(value, "lock.yml: `x`")


@pytest.mark.parametrize(("name", "usable"), [
    ("hello-1.0-0.conda", True), ("x.whl", True), ("", False), (".", False), ("..", False),
    ("a/b.conda", False), ("a\x00b.conda", False),
])
def test_usable_filename(name: str, usable: bool) -> None:
    assert usable_filename(name) is usable


# --- 12. what is at the lock's path -------------------------------------------------------


def test_lock_exists_is_false_only_when_nothing_is_there(tmp_path: Path) -> None:
    assert lock_exists(tmp_path / "conda-lock.yml") is False
    (tmp_path / "dangling.yml").symlink_to(tmp_path / "gone.yml")
    assert lock_exists(tmp_path / "dangling.yml") is False  # the lock it named is gone
    (tmp_path / "conda-lock.yml").write_text("version: 1\n", encoding="utf-8")
    assert lock_exists(tmp_path / "conda-lock.yml") is True


def test_lock_exists_refuses_a_directory_or_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "dir.yml").mkdir()
    with pytest.raises(LocalFileError, match=r"dir\.yml: a directory is in its place") as dir_:
        lock_exists(tmp_path / "dir.yml")
    loop = tmp_path / "loop.yml"
    os.symlink(loop.name, loop)
    with pytest.raises(LocalFileError, match=r"loop\.yml: Too many levels of symbolic links"):
        lock_exists(loop)
    assert dir_.value.exit_code == 16
