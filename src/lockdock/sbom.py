"""CycloneDX SBOM of one locked platform: every artifact the image installs, from the lock.

The SBOM is derived from the lock alone, so it is deterministic: the serial number is a
UUID5 of the lock file's SHA-256, the platform and the categories; the timestamp comes from
``SOURCE_DATE_EPOCH`` when set and is otherwise left out (it is optional in CycloneDX), so
the same lock always gives the same bytes.

Package URLs follow the purl specification (github.com/package-url/purl-spec):

- conda: ``pkg:conda/<name>@<version>?build=<build>&channel=<channel>&subdir=<subdir>&type=<ext>``
  The purl spec gives conda no namespace; the channel is a qualifier. A channel on
  anaconda.org is named (``conda-forge``), any other channel is its full URL.
- pip: ``pkg:pypi/<normalized name>@<version>`` (PEP 503 name normalization, as the spec says).

Each component carries the lock's hashes (SHA-256, and MD5 where the lock has one) and its
download URL as a ``distribution`` external reference; the lock's dependency edges become
the BOM's dependency graph.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import posixpath
import re
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lockdock.errors import LockdockError
from lockdock.fsutil import write_text_atomic
from lockdock.installer.lockfile import CONDA_SUFFIXES, Lock, LockedArtifact, read_lock
from lockdock.textio import source_date_epoch

#: The SBOM's file name, inside images (/usr/share/lockdock/) and next to gate reports.
SBOM_FILE = "sbom.cdx.json"
#: The CycloneDX spec version we emit and validate against.
SPEC_VERSION = "1.6"
_ANACONDA_HOSTS = frozenset({"conda.anaconda.org", "anaconda.org", "repo.anaconda.com"})
_SERIAL_NAMESPACE = uuid.UUID("6f0e1a4c-6a43-5f0e-9a65-6c6f636b646b")  # fixed: "lockdock"


class SbomError(LockdockError):
    """The SBOM could not be produced or does not validate against the CycloneDX schema."""


@dataclass(frozen=True)
class SbomRequest:
    """What to describe: one platform of one lock, the categories the image installs."""

    lock: Lock
    platform: str
    categories: tuple[str, ...] = ("main",)
    name: str | None = None
    #: The SBOM's timestamp; None: ``SOURCE_DATE_EPOCH`` when set, else no timestamp.
    epoch: int | None = None
    #: sha256 of the lock file's bytes, when the caller has it (else the file is hashed).
    lock_sha256: str | None = None


def lock_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def conda_channel(url: str) -> tuple[str, str]:
    """``(channel, subdir)`` of a conda package URL: ``.../<channel>/<subdir>/<file>``."""
    parsed = urlparse(url)
    channel_path, _file = posixpath.split(parsed.path)
    channel_path, subdir = posixpath.split(channel_path)
    if parsed.hostname in _ANACONDA_HOSTS:
        return channel_path.strip("/"), subdir
    return f"{parsed.scheme}://{parsed.netloc}{channel_path}".rstrip("/"), subdir


def _pypi_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def purl_for(artifact: LockedArtifact) -> str:
    """The package URL of one locked artifact (see the module docstring for the format)."""
    from packageurl import PackageURL

    if artifact.manager == "conda":
        channel, subdir = conda_channel(artifact.url)
        ext = next((s.lstrip(".") for s in CONDA_SUFFIXES if artifact.filename.endswith(s)), None)
        qualifiers = {"build": artifact.build, "channel": channel, "subdir": subdir, "type": ext}
        return str(
            PackageURL(
                type="conda",
                name=artifact.name,
                version=artifact.version,
                qualifiers={k: v for k, v in qualifiers.items() if v},
            )
        )
    if artifact.manager == "pip":
        name = _pypi_name(artifact.name)
        return str(PackageURL(type="pypi", name=name, version=artifact.version))
    raise SbomError(
        f"Lock entry {artifact.name} {artifact.version} has manager {artifact.manager!r}: "
        "lockdock knows conda and pip entries only."
    )


def _timestamp(explicit: int | None = None) -> datetime | None:
    if explicit is not None:
        return datetime.fromtimestamp(explicit, tz=UTC)
    epoch = source_date_epoch()
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)


def build_bom(request: SbomRequest) -> Any:
    """The ``cyclonedx.model.bom.Bom`` for ``request`` (pure: reads nothing but the lock)."""
    from cyclonedx.model import ExternalReference, ExternalReferenceType, HashType, Property, XsUri
    from cyclonedx.model import HashAlgorithm as Alg
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.dependency import Dependency
    from cyclonedx.model.tool import ToolRepository
    from packageurl import PackageURL

    lock = request.lock
    artifacts = lock.select(request.platform, request.categories)
    lock_hash = request.lock_sha256 or lock_sha256(lock.path)
    components: dict[tuple[str, str], Any] = {}
    for artifact in artifacts:
        hashes = []
        if artifact.sha256:
            hashes.append(HashType(alg=Alg.SHA_256, content=artifact.sha256))
        if artifact.md5:
            hashes.append(HashType(alg=Alg.MD5, content=artifact.md5))
        purl = purl_for(artifact)
        components[(artifact.manager, artifact.name)] = Component(
            type=ComponentType.LIBRARY,
            name=artifact.name,
            version=artifact.version,
            bom_ref=purl,
            purl=PackageURL.from_string(purl),
            hashes=hashes,
            external_references=[
                ExternalReference(
                    type=ExternalReferenceType.DISTRIBUTION, url=XsUri(artifact.url), hashes=hashes
                )
            ],
            properties=[
                Property(name="lockdock:manager", value=artifact.manager),
                Property(name="lockdock:categories", value=",".join(sorted(artifact.categories))),
            ],
        )

    name = request.name or lock.path.parent.name or "environment"
    root = Component(
        type=ComponentType.CONTAINER,
        name=name,
        version=lock_hash[:12],
        bom_ref=f"lockdock:{name}@{lock_hash[:12]}?platform={request.platform}",
        properties=[
            Property(name="lockdock:platform", value=request.platform),
            Property(name="lockdock:lock-sha256", value=lock_hash),
            Property(name="lockdock:categories", value=",".join(request.categories)),
        ],
    )
    tool = Component(type=ComponentType.APPLICATION, name="lockdock", version=_version())
    serial = uuid.uuid5(
        _SERIAL_NAMESPACE, f"{lock_hash}:{request.platform}:{','.join(request.categories)}"
    )
    bom = Bom(
        serial_number=serial,
        metadata=BomMetaData(component=root, tools=ToolRepository(components=[tool])),
        components=components.values(),
    )
    bom.metadata.timestamp = _timestamp(request.epoch)  # type: ignore[assignment]  # None: left out

    def ref_of(dep: str, manager: str) -> Any:
        other = "pip" if manager == "conda" else "conda"
        hit = components.get((manager, dep)) or components.get((other, dep))
        return hit.bom_ref if hit is not None else None

    dependencies = [Dependency(ref=root.bom_ref, dependencies=[
        Dependency(ref=c.bom_ref) for c in components.values()
    ])]
    for artifact in artifacts:
        own = components[(artifact.manager, artifact.name)]
        refs = {ref_of(dep, artifact.manager) for dep in artifact.dependencies}
        refs.discard(None)
        refs.discard(own.bom_ref)
        dependencies.append(
            Dependency(ref=own.bom_ref, dependencies=[Dependency(ref=r) for r in refs])
        )
    bom.dependencies = dependencies
    return bom


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lockdock")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def render(bom: Any) -> str:
    """Serialize to CycloneDX JSON and validate against the official strict schema."""
    from cyclonedx.output.json import JsonV1Dot6

    text: str = JsonV1Dot6(bom).output_as_string(indent=2) + "\n"
    problem = next(_schema_validator().iter_errors(json.loads(text)), None)
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path) or "(document)"
        raise SbomError(
            f"The generated SBOM does not validate against CycloneDX {SPEC_VERSION} at "
            f"{where}: {problem.message}"
        )
    return text


IRI_RULES = {"iri": "iri", "iri-reference": "iri_reference"}


def _import_jsonschema_without_eager_iri_grammars() -> None:
    """Import jsonschema with its ``iri`` and ``iri-reference`` checks importing rfc3987-syntax
    on first use: importing jsonschema imports rfc3987-syntax when it is installed, and that
    import builds 38 Earley grammars, about 2 s of every ``lockdock build`` (the SBOM is
    validated each time) for checks that only non-ASCII strings reach (``_iri_reference``).

    The same checks are registered on the draft checkers, so every validator in the process
    checks IRIs as jsonschema would have. Nothing to do when jsonschema is already imported,
    when rfc3987-syntax is (the grammars are built) or absent (jsonschema checks no IRIs
    then), or when jsonschema took its IRI checks from the ``rfc3987`` package instead."""
    if ("jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules
            or importlib.util.find_spec("rfc3987_syntax") is None):  # fmt: skip
        return
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # import: ImportError
    try:
        import jsonschema
    finally:
        del sys.modules["rfc3987_syntax"]

    def check(rule: str) -> Any:
        def conforms(instance: object) -> bool:
            if not isinstance(instance, str):
                return True
            from rfc3987_syntax import is_valid_syntax

            return bool(is_valid_syntax(rule, instance))

        return conforms

    for validator in (jsonschema.Draft7Validator, jsonschema.Draft201909Validator,
                      jsonschema.Draft202012Validator):  # fmt: skip
        for fmt, rule in IRI_RULES.items():
            if fmt not in validator.FORMAT_CHECKER.checkers:
                validator.FORMAT_CHECKER.checks(fmt, raises=ValueError)(check(rule))


@functools.cache
def _schema_validator() -> Any:
    """cyclonedx-python-lib's strict 1.6 validator (same schema files, same registry), with
    one format check made fast.

    jsonschema checks ``iri-reference`` with an Earley parser (rfc3987-syntax) at ~0.1 s per
    URL: 80 s for a 770-package platform. For ASCII strings an IRI reference is exactly a URI
    reference, which ``rfc3986-validator`` checks with a regular expression; non-ASCII strings
    still go through the full IRI grammar. Tests also validate with the library's validator
    as is, on real locks.
    """
    _import_jsonschema_without_eager_iri_grammars()
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from jsonschema import Draft7Validator, FormatChecker
    from rfc3986_validator import validate_rfc3986

    full_checker = Draft7Validator.FORMAT_CHECKER
    checker = FormatChecker(formats=())
    checker.checkers = dict(full_checker.checkers)

    def _iri_reference(value: object) -> bool:
        if isinstance(value, str) and value.isascii():
            return validate_rfc3986(value, rule="URI_reference") is not None
        return bool(full_checker.conforms(value, "iri-reference"))

    checker.checks("iri-reference")(_iri_reference)

    library = JsonStrictValidator(SchemaVersion.V1_6)
    return library._validator.evolve(format_checker=checker)


def sbom_json(
    lock_path: Path | str,
    platform: str,
    *,
    categories: Sequence[str] = ("main",),
    name: str | None = None,
    epoch: int | None = None,
) -> str:
    lock = read_lock(lock_path)
    return render(build_bom(SbomRequest(lock, platform, tuple(categories), name, epoch)))


def write_sbom(
    lock_path: Path | str,
    platform: str,
    out_path: Path | str,
    *,
    categories: Iterable[str] = ("main",),
    name: str | None = None,
    epoch: int | None = None,
) -> Path:
    """Write the validated SBOM of ``platform`` of the lock at ``lock_path`` (atomically).

    The images step calls this to ship the SBOM inside the image; publish writes one next to
    the gate report.
    """
    out = Path(out_path)
    text = sbom_json(lock_path, platform, categories=tuple(categories), name=name, epoch=epoch)
    write_text_atomic(out, text)
    return out


def sbom_command(project_dir: Path, flavor: str, platform: str | None,
                 categories: Sequence[str], output: Path | None) -> str | None:
    """``lockdock sbom``: the SBOM text when there is no ``output``; else it is written there
    (refused, before the lock is read, when ``output`` is a directory or a project input)."""
    from lockdock.render import check_output
    from lockdock.spec import load_project

    project = load_project(project_dir)
    (chosen,) = project.select([flavor])
    platform = host_platform() if platform is None else platform
    if output is None:
        return sbom_json(chosen.lock_path, platform, categories=categories, name=flavor)
    check_output(output, project,
                 alternative="Leave out --output to get the SBOM on standard output.")
    write_sbom(chosen.lock_path, platform, output, categories=categories, name=flavor)
    return None


def write_request(request: SbomRequest, out_path: Path) -> Path:
    """``write_sbom`` for a lock the caller has already read (and hashed)."""
    write_text_atomic(out_path, render(build_bom(request)))
    return out_path


def host_platform() -> str:
    """This machine's conda platform (``linux-64``, ``linux-aarch64``, ...)."""
    import platform as host

    machine = host.machine().lower()
    system = {"linux": "linux", "darwin": "osx", "windows": "win"}.get(host.system().lower(),
                                                                      host.system().lower())
    arch = {"x86_64": "64", "amd64": "64", "aarch64": "aarch64", "arm64": "arm64"}.get(
        machine, machine
    )
    if system == "linux" and arch == "arm64":
        arch = "aarch64"
    return f"{system}-{arch}"
