"""The one owner of lockdock's working state: the ``.lockdock/`` layout and every record.

Every path under ``<project>/.lockdock/`` and ``<project>/images.lock.json`` comes from a
``Workspace``; every record lockdock writes for a later step has exactly one writer and one
reader here, and a reader that finds a malformed record raises one paragraph naming the file
(never a traceback, never a silent skip)::

    <project>/
      images.lock.json                    what `publish` pushed (ImagesLock; pin, CI read it)
      .lockdock/
        store/                            hash-verified artifacts (lockdock.installer.store)
        build/                            staged build contexts (`lockdock build`)
        builds/<flavor>/<arch>.json       the last build of a flavor per arch (BuildRecord)
        reports/<flavor>/<digest hex>/    gate report: gate.json, report.md, junit.xml, ...
        cache/rattler/                    repodata cache of the solver
        relock/                           the weekly relock's reports (ci/relock.py)
        demo/                             the offline demo's work files (ci/demo.py)

Records and their errors: a build record that is not what ``write_build_record`` writes is a
SpecError (exit 3: delete or rebuild); ``gate.json`` that is not a JSON object refuses the
publication (PublishRefusedError, exit 14: rerun the gates); a malformed ``images.lock.json``
is a SpecError (exit 3).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockdock.errors import LockdockError, PublishRefusedError, SpecError
from lockdock.fsutil import write_text_atomic
from lockdock.installer.store import STORE_DIR
from lockdock.platform import Platform

#: ``.lockdock``: named once, next to the store (the stdlib-only installer cannot import us).
STATE_DIR = STORE_DIR.parent
IMAGES_LOCK = "images.lock.json"
IMAGES_LOCK_VERSION = 1

#: The files of one gate report (``reports/<flavor>/<digest hex>/``).
GATE_FILE = "gate.json"
REPORT_FILE = "report.md"
JUNIT_FILE = "junit.xml"
OBSERVATIONS_FILE = "observations.json"
FINGERPRINT_FILE = "fingerprint.json"
PAYLOAD_LOG_FILE = "payload.log"
#: Copied from the payload's results, in this order; gate.json is always written last.
RESULT_FILES = (JUNIT_FILE, OBSERVATIONS_FILE, FINGERPRINT_FILE, PAYLOAD_LOG_FILE)


def read_json(path: Path, *, error: type[LockdockError] = SpecError, fix: str = "") -> Any:
    """The JSON document in ``path``, or None when there is no such file.

    The one JSON-file reader of lockdock's records: a file that cannot be read or is not JSON
    raises ``error`` naming the file, the position and ``fix`` (what to do), never a traceback.
    """
    from lockdock.textio import load_json, read_text

    try:
        text = read_text(path)  # not UTF-8: SpecError naming the byte; unreadable: exit 16
    except FileNotFoundError:
        return None
    return load_json(text, path, error, fix=fix)


@dataclass(frozen=True)
class Workspace:
    """A project's working state, rooted at the project folder."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def store(self) -> Path:
        return self.root / STORE_DIR

    @property
    def build_dir(self) -> Path:
        """Build contexts and Dockerfiles staged by ``lockdock build``."""
        return self.state / "build"

    @property
    def cache_dir(self) -> Path:
        return self.state / "cache"

    @property
    def rattler_cache(self) -> Path:
        return self.cache_dir / "rattler"

    @property
    def builds_dir(self) -> Path:
        return self.state / "builds"

    def build_record_path(self, flavor: str, platform: str | Platform) -> Path:
        """``builds/<flavor>/<arch>.json`` of a platform images are built for."""
        chosen = platform if isinstance(platform, Platform) else Platform.image(platform)
        return self.builds_dir / flavor / f"{chosen.arch}.json"

    @property
    def reports_dir(self) -> Path:
        return self.state / "reports"

    def report_dir(self, flavor: str, digest: str) -> Path:
        """``reports/<flavor>/<digest without sha256:>/``: one gate report per image."""
        return self.reports_dir / flavor / digest.removeprefix("sha256:")

    def gate_path(self, flavor: str, digest: str) -> Path:
        return self.report_dir(flavor, digest) / GATE_FILE

    @property
    def relock_dir(self) -> Path:
        return self.state / "relock"

    @property
    def demo_dir(self) -> Path:
        return self.state / "demo"

    @property
    def images_lock_path(self) -> Path:
        return self.root / IMAGES_LOCK

    # --- records, through this workspace's paths ---------------------------------------

    def read_build_record(self, flavor: str, platform: str | Platform) -> BuildRecord | None:
        return read_build_record(self.build_record_path(flavor, platform))

    def write_build_record(self, record: BuildRecord) -> Path:
        path = self.build_record_path(record.flavor, record.platform)
        write_build_record(path, record)
        return path

    def read_gate(self, flavor: str, digest: str) -> dict[str, Any] | None:
        return read_gate_record(self.gate_path(flavor, digest))

    def read_images_lock(self) -> dict[str, Any] | None:
        return read_images_lock(self.images_lock_path)

    def write_images_lock(self, data: Mapping[str, Any]) -> Path:
        write_text_atomic(self.images_lock_path, render_images_lock(data))
        return self.images_lock_path

    def relative(self, path: Path) -> str:
        """``path`` relative to the project when inside it (records stay relocatable)."""
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _need(data: Mapping[str, Any], key: str, kind: type, what: str, path: Path, fix: str) -> Any:
    """``data[key]`` when it is a ``kind`` (a bool is no int here), else SpecError naming
    the file and the key."""
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        found = "nothing" if key not in data else f"{type(value).__name__} {value!r}"
        raise SpecError(f"{path} is not a valid {what}: `{key}` should be a {kind.__name__}, "
                        f"found {found}. {fix}")
    return value


# --- build record: builds/<flavor>/<arch>.json ---------------------------------------------


_BUILD_FIX = "Delete it, or rebuild with `lockdock build FLAVOR --force`."


@dataclass(frozen=True)
class BuildRecord:
    """What ``lockdock build`` built: read by ``test`` and ``publish`` for their defaults."""

    flavor: str
    platform: str  # docker platform: linux/amd64
    reference: str  # the content-addressed tag, name:tag
    digest: str
    tags: tuple[str, ...]
    lock: str  # the lock file it was built from
    lock_sha256: str
    source_date_epoch: int
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The project's git commit at build time (not in the image: see lockdock.git).
    revision: str | None = None
    #: How it was built, besides the lock: what ``verify-repro`` needs to rebuild the same
    #: digest (``--compression``; ``--base-image``, None: the Dockerfile's default;
    #: ``--builder``, None: the current one). A record without ``compression`` predates them.
    compression: str | None = None
    base_image: str | None = None
    builder: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "flavor": self.flavor, "platform": self.platform, "reference": self.reference,
            "digest": self.digest, "tags": list(self.tags), "lock": self.lock,
            "lock_sha256": self.lock_sha256, "source_date_epoch": self.source_date_epoch,
            "labels": dict(self.labels), "revision": self.revision,
            "compression": self.compression, "base_image": self.base_image,
            "builder": self.builder,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Any, path: Path) -> BuildRecord:
        what = "lockdock build record"
        if not isinstance(data, dict):
            raise SpecError(f"{path} is not a valid {what}: it is not a JSON object. {_BUILD_FIX}")
        strings = {key: _need(data, key, str, what, path, _BUILD_FIX)
                   for key in ("flavor", "platform", "reference", "digest", "lock", "lock_sha256")}
        tags = _need(data, "tags", list, what, path, _BUILD_FIX)
        labels = _need(data, "labels", dict, what, path, _BUILD_FIX)
        if not all(isinstance(t, str) for t in tags) \
                or not all(isinstance(v, str) for v in labels.values()):
            raise SpecError(f"{path} is not a valid {what}: `tags` and `labels` hold strings "
                            f"only. {_BUILD_FIX}")
        optional: dict[str, str | None] = {}
        for key in ("revision", "compression", "base_image", "builder"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise SpecError(f"{path} is not a valid {what}: `{key}` should be a str or "
                                f"null, found {value!r}. {_BUILD_FIX}")
            optional[key] = value
        return cls(**strings, tags=tuple(tags), labels=dict(labels),
                   source_date_epoch=_need(data, "source_date_epoch", int, what, path, _BUILD_FIX),
                   revision=optional["revision"], compression=optional["compression"],
                   base_image=optional["base_image"], builder=optional["builder"])


def read_build_record(path: Path) -> BuildRecord | None:
    """The build record at ``path``, None when there is none, SpecError when malformed."""
    data = read_json(path, fix=_BUILD_FIX)
    return None if data is None else BuildRecord.from_json(data, path)


def write_build_record(path: Path, record: BuildRecord) -> None:
    write_text_atomic(path, _dumps(record.to_json()))


# --- gate report: reports/<flavor>/<digest hex>/ ------------------------------------------


def write_report_files(directory: Path, markdown: str, gate: Mapping[str, Any],
                       results: Path | None) -> Path:
    """report.md, the payload's result files and gate.json, each atomically, gate.json last.

    An earlier gate.json goes first: a crash part-way leaves no verdict for publish to trust;
    result files of an earlier run of this digest that this run lacks are removed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GATE_FILE).unlink(missing_ok=True)
    for name in RESULT_FILES:
        source = results / name if results else None
        if source is not None and source.is_file():
            write_text_atomic(directory / name, source.read_text(encoding="utf-8"))
        else:
            (directory / name).unlink(missing_ok=True)
    write_text_atomic(directory / REPORT_FILE, markdown)
    write_text_atomic(directory / GATE_FILE, _dumps(gate))
    return directory


def read_gate_record(path: Path) -> dict[str, Any] | None:
    """gate.json at ``path`` (None when absent); PublishRefusedError when it is not a JSON
    object. Its fields are judged by ``publish_plan.gate_refusal``."""
    data = read_json(path, error=PublishRefusedError, fix="Rerun `lockdock test`.")
    if data is not None and not isinstance(data, dict):
        raise PublishRefusedError(f"Gate report {path} is not a JSON object: rerun `lockdock "
                                  "test`.")
    return data


# --- images.lock.json ---------------------------------------------------------------------


_IMAGES_FIX = "Fix or delete it; `lockdock publish` rewrites it."
_IMAGE_STRINGS = ("flavor", "repository", "digest", "reference")
_DIGEST_RULE = "a digest (sha256: and 64 lowercase hex digits)"


def _is_string(value: object) -> bool:
    return isinstance(value, str)


def _is_lock_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef"
                                                               for c in value)


def _is_date(value: object) -> bool:  # YYYYMMDD: it goes into the descriptive tag
    return isinstance(value, str) and len(value) == 8 and value.isascii() and value.isdigit()


#: Optional fields of a record: the rule each value follows, and its test.
_RECORD_FIELDS: tuple[tuple[str, str, Callable[[object], bool]], ...] = (
    ("lock", "a string", _is_string),
    ("lock_hash", "64 lowercase hex digits (the lock's SHA-256)", _is_lock_hash),
    ("date", "a date YYYYMMDD", _is_date),
    ("revision", "a string", _is_string),
)


def read_images_lock(path: Path) -> dict[str, Any] | None:
    """images.lock.json at ``path``, None when absent, SpecError naming the file (and the
    record and field) when it is not what ``publish`` writes, or holds two records of one
    flavor and repository. Every later reader trusts the types checked here."""
    data = read_json(path, fix=_IMAGES_FIX)
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SpecError(f"{path} is not an images.lock.json: it needs an `images` list. "
                        f"{_IMAGES_FIX}")
    version = data.get("version", IMAGES_LOCK_VERSION)
    if isinstance(version, bool) or version != IMAGES_LOCK_VERSION:
        raise SpecError(f"{path} has version {data.get('version')!r}; this lockdock reads "
                        f"version {IMAGES_LOCK_VERSION}. Upgrade lockdock, or delete it.")
    seen: dict[tuple[str, str], int] = {}
    for number, record in enumerate(data["images"], 1):
        _check_published_record(path, number, record)
        key = (record["flavor"], record["repository"])
        if key in seen:
            raise SpecError(f"{path} has two records of flavor {key[0]!r} in repository "
                            f"{key[1]} (records {seen[key]} and {number}): there is one per "
                            f"flavor and repository. {_IMAGES_FIX}")
        seen[key] = number
    return data


def _check_published_record(path: Path, number: int, record: Any) -> None:
    """SpecError naming the file, the record (number, flavor, repository) and the field
    unless ``record`` has the fields and types ``publish_plan.publication_record`` writes."""
    from lockdock.platform import DOCKER_PLATFORMS
    from lockdock.registry import ImageRef, is_digest, is_tag, parse_reference

    what = f"images.lock.json (record {number})"
    if not isinstance(record, dict):
        raise SpecError(f"{path} is not a valid {what}: a record is not a JSON object. "
                        f"{_IMAGES_FIX}")
    _need(record, "flavor", str, what, path, _IMAGES_FIX)
    _need(record, "repository", str, what, path, _IMAGES_FIX)
    fix = (f"(Record {number} is flavor {record['flavor']!r} in repository "
           f"{record['repository']}.) {_IMAGES_FIX}")
    for key in _IMAGE_STRINGS[2:]:
        _need(record, key, str, what, path, fix)

    def wrong(field: str, expected: str, value: object) -> SpecError:
        text = repr(value)
        found = f"{type(value).__name__} {text if len(text) <= 160 else text[:157] + '...'}"
        return SpecError(f"{path} is not a valid {what}: `{field}` should be {expected}, "
                         f"found {found}. {fix}")

    def parsed(key: str) -> ImageRef:
        try:
            return parse_reference(record[key])
        except LockdockError as error:
            raise SpecError(f"{path} is not a valid {what}: `{key}`: {error.message} {fix}") \
                from None

    repository = parsed("repository")
    if repository.tag or repository.digest or repository.name != record["repository"]:
        raise wrong("repository", "a repository without tag or digest (REGISTRY/NAME)",
                    record["repository"])
    if not is_digest(record["digest"]):
        raise wrong("digest", _DIGEST_RULE, record["digest"])
    reference = parsed("reference")
    if reference.name != repository.name or reference.digest is None:
        raise wrong("reference", f"{repository.name}:TAG@DIGEST (the record's repository, "
                    "pinned)", record["reference"])
    for key, rule, valid in _RECORD_FIELDS:
        if key in record and not valid(record[key]):
            raise wrong(key, rule, record[key])
    tags = record.get("tags", [])
    if not isinstance(tags, list) or not all(is_tag(t) for t in tags):
        raise wrong("tags", "a list of image tags (strings)", tags)
    platforms = record.get("platforms", {})
    if not isinstance(platforms, dict) or not all(isinstance(e, dict) for e in platforms.values()):
        raise wrong("platforms", "an object mapping each platform to an object", platforms)
    for platform, entry in platforms.items():
        if platform not in DOCKER_PLATFORMS:
            raise wrong("platforms", f"keyed by platform ({', '.join(DOCKER_PLATFORMS)})",
                        platform)
        for key, rule, valid in (("digest", _DIGEST_RULE, is_digest),
                                 ("image_id", _DIGEST_RULE, is_digest),
                                 ("tag", "an image tag", is_tag),
                                 ("gate_report", "a string", _is_string)):
            if key in entry and not valid(entry[key]):
                raise wrong(f'platforms["{platform}"].{key}', rule, entry[key])


def updated_images_lock(existing: Mapping[str, Any] | None, record: Mapping[str, Any]) \
        -> dict[str, Any]:
    """images.lock.json with ``record`` replacing the one for its (flavor, repository)."""
    images = [
        r for r in (existing or {}).get("images", [])
        if (r.get("flavor"), r.get("repository")) != (record["flavor"], record["repository"])
    ]
    images.append(dict(record))
    images.sort(key=lambda r: (r["flavor"], r["repository"]))
    return {"version": IMAGES_LOCK_VERSION, "images": images}


def render_images_lock(data: Mapping[str, Any]) -> str:
    """Sorted keys, two-space indent: a rerun of the same publication is byte-identical."""
    return _dumps(data)


def published_records(images_lock: Mapping[str, Any] | None, flavor: str,
                      repository: str | None = None) -> list[dict[str, Any]]:
    """The records of ``flavor`` (in ``repository`` when given), in file order."""
    return [
        r for r in (images_lock or {}).get("images", [])
        if r.get("flavor") == flavor and (repository is None or r.get("repository") == repository)
    ]
