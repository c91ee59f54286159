"""Build planning, pure: labels, tags, ``SOURCE_DATE_EPOCH``, the store check, and the
``docker buildx build`` argv. ``plan_build`` returns a value and touches nothing; staging the
inputs it names is ``lockdock.image.stage``'s.

Reproducibility: ``SOURCE_DATE_EPOCH`` is the newest build timestamp among the lock's conda
packages (read from the archives the lock pins, so it is a function of the lock), BuildKit
rewrites every layer timestamp to it (``rewrite-timestamp=true``), provenance attestations
are off, and the installer writes byte-identical prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lockdock import facts
from lockdock.context import FlavorContext
from lockdock.errors import IntegrityError, SpecError, UsageError
from lockdock.installer.layer_plan import SOLO_LAYER_ARG
from lockdock.installer.lockfile import LockedArtifact
from lockdock.installer.pyc_cache import PYC_CACHE_ARG, PYC_CACHE_OFF
from lockdock.installer.store import plan_fetch
from lockdock.platform import Platform
from lockdock.registry import parse_reference
from lockdock.tags import Tags, local_name, local_tags

#: When the lock's conda packages carry no timestamp (2000-01-01T00:00:00Z).
FALLBACK_EPOCH = 946684800

def source_date_epoch(timestamps: Iterable[datetime | int | None]) -> int:
    """The newest package timestamp (seconds; conda's millisecond stamps are converted).

    No image can be older than its newest package, and the packages are pinned by hash, so
    this is a property of the lock. ``FALLBACK_EPOCH`` when no package has a timestamp.
    """
    seconds = []
    for stamp in timestamps:
        if stamp is None:
            continue
        value = int(stamp.timestamp()) if isinstance(stamp, datetime) else int(stamp)
        if value > 100_000_000_000:  # milliseconds
            value //= 1000
        if value > 0:
            seconds.append(value)
    return max(seconds, default=FALLBACK_EPOCH)


def plan_labels(
    context: FlavorContext, *, epoch: int, version_tag: str, source: str | None,
    base_image: str,
) -> dict[str, str]:
    """Every label of the image (lock facts, flavor, platform, versions, OCI annotations).

    ``base.name`` is a label here, not a Dockerfile ``LABEL``: that would need an ``ARG
    BASE_IMAGE`` inside the base stage, and newer Dockerfile frontends write each such ``ARG``
    into the image's history (BuildKit 0.23's does, dockerd 26's 0.13 does not): the same
    build would give two digests on the two."""
    return {
        facts.FLAVOR_LABEL: context.flavor.name,
        facts.ACCELERATOR_LABEL: context.accelerator.kind,
        facts.PLATFORM_LABEL: str(context.platform.docker),
        facts.LOCK_HASH_LABEL: str(context.lock.content_hash.get(context.platform.subdir, "")),
        facts.LOCK_SHA256_LABEL: context.lock_sha256,
        **facts.version_labels(context.versions),
        f"{facts.OCI}.created": facts.oci_created(epoch),
        f"{facts.OCI}.version": version_tag,
        f"{facts.OCI}.source": source or "unknown",
        f"{facts.OCI}.base.name": base_image,
    }


def check_image_name(name: str, flavor: str) -> str:
    """``--name``: a repository (``[registry/]path``) without tag or digest, since the build
    gives the tags itself. UsageError naming it otherwise (an empty name too: no silent
    default)."""
    expected = (f"an image repository such as {local_name(flavor)} or ghcr.io/org/name, "
                "without a tag or digest (the build gives its own tags)")
    try:
        ref = parse_reference(name)
    except UsageError as error:
        raise UsageError(f"--name {name!r} is not an image name: {error.message} Pass "
                         f"{expected}.") from None
    if ref.tag or ref.digest or name != ref.name:
        part = f"the digest @{ref.digest}" if ref.digest else (
            f"the tag :{ref.tag}" if ref.tag else "surrounding spaces")
        raise UsageError(f"--name {name!r} has {part}: pass {expected}.")
    return name


def check_base_image(base_image: str | None, base_default: str | None) -> str:
    """The base image the build starts from: ``--base-image`` (UsageError when it is not an
    image reference) or images/base/Dockerfile's ``ARG BASE_IMAGE`` default (SpecError)."""
    from lockdock.image.dockerfile import base_image_problem

    if base_image is None and not base_default:
        raise UsageError(f"{base_image_problem(base_default)}.")
    base = base_image if base_image is not None else str(base_default)
    try:
        if str(parse_reference(base)) != base:
            raise UsageError("it has surrounding spaces.")
    except UsageError as error:
        if base_image is not None:
            raise UsageError(f"--base-image {base!r} is not an image reference: "
                             f"{error.message} Pass [registry/]name[:tag][@sha256:digest]."
                             ) from None
        raise SpecError(f"images/base/Dockerfile's ARG BASE_IMAGE default {base!r} is not an "
                        f"image reference: {error.message}") from None
    return base


def planned_tags(context: FlavorContext, native: Platform) -> Tags:
    """The tags ``lockdock build`` gives this flavor's image (a function of the context)."""
    return local_tags(context.flavor.name, context.lock_sha256, context.descriptor,
                      context.platform, native)


def missing_from_store(
    artifacts: Sequence[LockedArtifact], present: frozenset[str] | set[str]
) -> list[LockedArtifact]:
    """The lock's artifacts that the store lacks (the store's own fetch plan)."""
    return plan_fetch(artifacts, present)


@dataclass(frozen=True)
class BuildPlan:
    project_root: Path
    flavor: str
    platform: str  # docker platform
    conda_platform: str
    lock_path: Path  # relative to the project root
    lock_sha256: str
    epoch: int
    base_image: str | None  # None: the Dockerfile's default
    name: str  # the local repository: lockdock/<flavor>
    tags: Tags
    labels: Mapping[str, str]
    dockerfile: Path
    store_context: Path
    installer_context: Path
    sbom_context: Path
    builder: str | None = None
    target: str | None = None
    extra_args: Mapping[str, str] = field(default_factory=dict)
    #: The flavor's own instructions that add layers with build-time file times; any:
    #: BuildKit's ``rewrite-timestamp`` (every layer decompressed and recompressed once
    #: more), none: the stages lockdock ships stamp their files themselves.
    flavor_layers: tuple[str, ...] = ()

    @property
    def rewrite_timestamps(self) -> bool:
        return bool(self.flavor_layers)

    @property
    def loads_tarball(self) -> bool:
        """Whether the image reaches the engine as a tarball piped into ``docker load``: for
        another builder (its image store is not the engine's) or a timestamp rewrite (the
        engine's own exporter refuses it). Otherwise the engine's exporter writes the image
        into its store directly, unpacking only the layers it lacks."""
        return self.rewrite_timestamps or self.builder is not None
    #: The project's git commit: recorded (build record, images.lock.json), never labelled:
    #: it is no build input, and in the image config it would make one lock two digests.
    revision: str | None = None

    @property
    def references(self) -> tuple[str, ...]:
        """Every ``name:tag`` the build gets, content-addressed first."""
        return self.tags.named(self.name)

    @property
    def reference(self) -> str:
        return self.references[0]


def _listing(artifacts: Sequence[LockedArtifact]) -> str:
    return ", ".join(f"{a.name} {a.version} ({a.filename})" for a in artifacts)


def plan_build(
    context: FlavorContext,
    *,
    store: Path,
    present: frozenset[str] | set[str],
    timestamps: Iterable[datetime | int | None],
    git: tuple[str | None, str | None],
    native: Platform,
    work: Path,
    base_image: str | None = None,
    base_default: str | None = None,
    builder: str | None = None,
    name: str | None = None,
    flavor_layers: Sequence[str] = (),
    unbuilt: Sequence[LockedArtifact] = (),
) -> BuildPlan:
    """Everything one build needs, checked (store complete, a base image), as a value.

    ``flavor_layers``: ``dockerfile.layer_instructions`` of the flavor's own Dockerfile.
    ``unbuilt``: the lock's pip sdists for which the store holds no built wheel (the image's
    installer builds nothing: without it the build would fail inside BuildKit)."""
    flavor, subdir = context.flavor, context.platform.subdir
    local = local_name(flavor.name) if name is None else check_image_name(name, flavor.name)
    base = check_base_image(base_image, base_default)
    missing = missing_from_store(context.artifacts, present)
    if missing:
        listing = _listing(missing)
        raise IntegrityError(
            f"Store {store} lacks {len(missing)} artifact(s) of {flavor.lock_path} for "
            f"{subdir}: {listing}. Run `lockdock fetch {flavor.name} --platform {subdir}` "
            "first; the build reads artifacts only from the store."
        )
    if unbuilt:
        listing = _listing(unbuilt)
        raise IntegrityError(
            f"Store {store} has no wheel built from {len(unbuilt)} pip source "
            f"distribution(s) of {flavor.lock_path}: {listing}. Run `lockdock fetch "
            f"{flavor.name} --platform {subdir}` first: it builds each sdist once, "
            "reproducibly; the image's installer builds nothing."
        )
    epoch = source_date_epoch(timestamps)
    tags = planned_tags(context, native)
    source, revision = git
    labels = plan_labels(context, epoch=epoch, version_tag=tags.content_addressed,
                         source=source, base_image=base)
    return BuildPlan(
        project_root=context.project.root,
        flavor=flavor.name,
        platform=str(context.platform.docker),
        conda_platform=subdir,
        lock_path=context.lock_relative,
        lock_sha256=context.lock_sha256,
        epoch=epoch,
        base_image=base_image,
        name=local,
        tags=tags,
        labels=labels,
        dockerfile=work / f"{flavor.name}.Dockerfile",
        store_context=work / f"store-{flavor.name}-{subdir}",
        installer_context=work / f"installer-{subdir}",
        sbom_context=work / f"sbom-{flavor.name}-{subdir}",
        builder=builder,
        revision=revision,
        extra_args=({} if flavor.solo_layer_mib is None
                    else {SOLO_LAYER_ARG: str(flavor.solo_layer_mib)}),
        flavor_layers=tuple(flavor_layers),
    )


def buildx_argv(
    plan: BuildPlan, *, output: str, metadata_file: Path, no_cache: bool = False,
    compile_all: bool = False,
) -> list[str]:
    """``docker buildx build`` for ``plan`` with ``output`` (``--output`` value).

    ``no_cache``: BuildKit's ``--no-cache``, which keeps cache mounts (the builder's pyc
    cache). ``compile_all``: no pycs from earlier builds either (verify-repro)."""
    argv = ["docker", "buildx", "build"]
    if plan.builder:
        argv += ["--builder", plan.builder]
    argv += [
        "--platform", plan.platform,
        "--file", str(plan.dockerfile),
        "--build-context", f"store={plan.store_context}",
        "--build-context", f"installer={plan.installer_context}",
        "--build-context", f"sbom={plan.sbom_context}",
        "--build-arg", f"LOCK={plan.lock_path.as_posix()}",
        "--build-arg", f"SOURCE_DATE_EPOCH={plan.epoch}",
        "--provenance=false",
        "--sbom=false",
        "--output", output,
        "--metadata-file", str(metadata_file),
    ]  # fmt: skip
    if plan.base_image:
        argv += ["--build-arg", f"BASE_IMAGE={plan.base_image}"]
    for key, value in sorted(plan.extra_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in sorted(plan.labels.items()):
        argv += ["--label", f"{key}={value}"]
    if plan.target:
        argv += ["--target", plan.target]
    if no_cache:
        argv.append("--no-cache")
    if compile_all:
        argv += ["--build-arg", f"{PYC_CACHE_ARG}={PYC_CACHE_OFF}"]
    argv.append(str(plan.project_root))
    return argv

def image_output(name: str, *, rewrite_timestamps: bool, tarball: bool = True) -> str:
    """The ``--output`` that puts the image named ``name`` into the engine.

    ``tarball``: a docker-format tarball on stdout, for ``docker load`` (dockerd 26's own
    image exporter refuses ``rewrite-timestamp``: it always unpacks; the containerd image
    store keeps the manifest digest). Otherwise the engine's exporter (``type=image``), which
    gives the same manifest digest with no tarball. ``BuildPlan.loads_tarball`` decides.
    """
    if not tarball:
        return f"type=image,name={name},oci-mediatypes=true"
    return f"type=docker,name={name},dest=-,oci-mediatypes=true{_rewrite(rewrite_timestamps)}"


def oci_output(dest: Path, *, rewrite_timestamps: bool) -> str:
    return f"type=oci,dest={dest},tar=false{_rewrite(rewrite_timestamps)}"


def _rewrite(rewrite_timestamps: bool) -> str:
    return ",rewrite-timestamp=true" if rewrite_timestamps else ""
