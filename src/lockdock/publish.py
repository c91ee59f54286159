"""Publish gated images: content-addressed tag first, descriptive tags next, moving tags last.

Planning is pure (``gate_refusal``, ``lock_descriptor``, ``plan_tags``, ``publish_date``,
``plan_publish``, ``updated_images_lock``); pushing sits in ``DockerPusher`` and
``execute``.

Tags, in push order (``plan_tags``):

1. content-addressed ``<flavor>-<lockhash12>``: the first 12 hex digits of the SHA-256 of
   the lock file's bytes. It names one lock, so it never has to move.
2. descriptive ``<flavor>-py3.12-torch2.5-cu12.6-<YYYYMMDD>``, read from the lock (python,
   torch, CUDA where the lock has it) and the publish date.
3. moving ``<flavor>``, plus ``latest`` for ``cpu``.

Publishing is refused (PublishRefusedError) unless ``.lockdock/reports/<flavor>/<hex>/
gate.json`` exists for the image's exact digest, names the same flavor and platform, and
says ``passed: true``.

The date of the descriptive tag must not change between a failed run and its rerun, or the
rerun would push a second descriptive tag. It is, in order: the image's creation time (the
reproducible build derives it from SOURCE_DATE_EPOCH, so it is a property of the digest) when
it is a real date (after 2000); else ``SOURCE_DATE_EPOCH`` from the environment; else the date
``images.lock.json`` already records for this same digest; else today (UTC), which is then
recorded. (Only that last fallback can differ between a failed run and a rerun on another
day, and only for images without a build date, e.g. ``docker import``-ed ones.)

Failure and rerun: pushes go in the order above and stop at the first failure, so a failed
run never moves a moving tag. ``images.lock.json`` is written (atomically) only after every
push succeeded and each pushed tag was read back from the registry with the expected digest.
A rerun pushes again: the registry already has the blobs, each tag is set to the same
manifest, and the record comes out byte-identical, so re-publishing is idempotent.

Retries: docker pushes are not HTTP requests lockdock makes (dockerd makes them), so
urllib3's ``Retry`` cannot wrap them and no retry library is installed; ``_with_retries`` is
a small bounded loop (``attempts`` tries, exponential backoff) that retries only errors that
look transient (connection refused/reset, EOF, timeouts, HTTP 5xx/429) and never auth or
manifest errors.

Multi-arch: when both linux/amd64 and linux/arm64 images of a flavor are given, each is
pushed under ``<content tag>-<arch>`` and an OCI index over both is created for every tag
with ``docker buildx imagetools create`` (same sources, so the same index digest for each).
When each platform is built on its own CI runner, ``mode="platform"`` (``--platform-only``)
pushes just ``<content tag>-<arch>`` from each runner, and ``mode="merge"`` (``--merge``)
reads those manifests back from the registry, checks every platform's gate report, and makes
the index, the tags and the record. Gate reports are keyed by the engine's image id; with the
containerd image store (``ci/engine``, the workflows) that id is the pushed manifest digest,
which is what makes a report found by the registry's digest valid.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockdock.errors import (
    EngineError,
    PublishRefusedError,
    RegistryError,
    SpecError,
    UsageError,
)
from lockdock.fsutil import sha256_file, write_text_atomic
from lockdock.image import LOCK_SHA256_LABEL  # where the build records sha256(lock file)
from lockdock.installer.lockfile import Lock, LockedArtifact
from lockdock.progress import say
from lockdock.registry import ImageRef, parse_reference

IMAGES_LOCK = "images.lock.json"
IMAGES_LOCK_VERSION = 1
GATE_FILE = "gate.json"
DOCKER_TO_CONDA = {"linux/amd64": "linux-64", "linux/arm64": "linux-aarch64"}
_ARCH = {"linux/amd64": "amd64", "linux/arm64": "arm64"}
_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")
_TRANSIENT = re.compile(
    r"connection refused|connection reset|broken pipe|\bEOF\b|timeout|timed out|"
    r"temporar|unavailable|too many requests|\b(429|500|502|503|504)\b|"
    r"server misbehaving|i/o timeout|use of closed network connection",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class LocalImage:
    """A built image in the local engine, as publish needs to know it."""

    platform: str  # docker platform: linux/amd64
    reference: str  # how the engine finds it (tag or id)
    digest: str  # the engine's image id (with the containerd store: the manifest digest)
    created: str | None = None  # RFC 3339 from the image config
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TagPlan:
    content_addressed: str
    descriptive: tuple[str, ...]
    moving: tuple[str, ...]

    @property
    def in_order(self) -> tuple[str, ...]:
        return (self.content_addressed, *self.descriptive, *self.moving)


@dataclass(frozen=True)
class PublishPlan:
    flavor: str
    repository: ImageRef
    lock_path: Path
    lock_hash: str
    date: str
    images: tuple[LocalImage, ...]
    tags: TagPlan
    gate_reports: Mapping[str, Path]  # platform -> gate.json
    platform_only: bool = False  # push each platform under its <content tag>-<arch> only

    @property
    def multi_platform(self) -> bool:
        return len(self.images) > 1

    def platform_tag(self, image: LocalImage) -> str:
        """The tag one platform's image is pushed under."""
        if not self.multi_platform and not self.platform_only:
            return self.tags.content_addressed
        return arch_tag(self.tags.content_addressed, image.platform)


def arch_tag(content_tag: str, platform: str) -> str:
    return f"{content_tag}-{_ARCH.get(platform, platform.replace('/', '-'))}"


# --- planning (pure) -------------------------------------------------------------------


def gate_report_path(project_root: Path, flavor: str, digest: str) -> Path:
    """Where ``lockdock test`` writes the verdict for this image (``gates.report_dir``)."""
    from lockdock.gates import report_dir

    return report_dir(project_root, flavor, digest) / GATE_FILE


def gate_refusal(report: Mapping[str, Any] | None, path: Path, flavor: str,
                 image: LocalImage) -> str | None:
    """Why ``image`` may not be published given its gate report, or None when it may."""
    if report is None:
        return (
            f"no gate report for image {image.digest} ({flavor}, {image.platform}): {path} "
            f"does not exist. Run `lockdock test {flavor}` first."
        )
    if report.get("image_digest") != image.digest:
        return (
            f"gate report {path} is for image {report.get('image_digest')!r}, not for "
            f"{image.digest}: the image changed since it was gated."
        )
    if report.get("flavor") not in (None, flavor):
        return f"gate report {path} is for flavor {report.get('flavor')!r}, not {flavor!r}."
    if report.get("platform") not in (None, image.platform):
        return (
            f"gate report {path} is for platform {report.get('platform')!r}, "
            f"not {image.platform!r}."
        )
    if report.get("passed") is not True:
        return f"the gates failed for image {image.digest} ({path} says passed: false)."
    return None


def _major_minor(version: str) -> str:
    parts = re.split(r"[.+]", version)
    return ".".join(parts[:2]) if len(parts) >= 2 else version


def lock_descriptor(artifacts: Iterable[LockedArtifact]) -> str:
    """``py3.12-torch2.5-cu12.6`` from the versions locked for one platform.

    Python from conda's ``python``; torch from conda's ``pytorch`` or pip's ``torch``. The
    CUDA part names the CUDA torch was built for, not whichever CUDA libraries something else
    pulled in: none for a CPU torch (conda build string ``cpu_*``, pip local version
    ``+cpu``); else conda-forge's ``cuda-version`` metapackage, ``cuda-cudart``, or pip's
    ``nvidia-cuda-runtime-cu1x``. Parts the lock does not have are left out.
    """
    by_name: dict[str, LockedArtifact] = {}
    for artifact in artifacts:
        by_name.setdefault(artifact.name.lower(), artifact)

    def version(*names: str) -> str | None:
        return next((by_name[n].version for n in names if n in by_name), None)

    parts = []
    python = version("python")
    if python:
        parts.append(f"py{_major_minor(python)}")
    torch = by_name.get("pytorch") or by_name.get("torch")
    if torch:
        parts.append(f"torch{_major_minor(torch.version)}")
    cpu_torch = torch is not None and (
        (torch.build or "").startswith("cpu") or torch.version.endswith("+cpu")
    )
    cuda = None if cpu_torch else version("cuda-version", "cuda-cudart")
    if cuda is None and not cpu_torch:
        cuda = next((a.version for n, a in sorted(by_name.items())
                     if n.startswith("nvidia-cuda-runtime-cu")), None)
    if cuda:
        parts.append(f"cu{_major_minor(cuda)}")
    return "-".join(parts)


def _tag_safe(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", text)[:128]


def plan_tags(flavor: str, lock_hash: str, descriptor: str, date: str) -> TagPlan:
    descriptive = "-".join(p for p in (flavor, descriptor, date) if p)
    moving = (flavor, "latest") if flavor == "cpu" else (flavor,)
    return TagPlan(
        content_addressed=_tag_safe(f"{flavor}-{lock_hash[:12]}"),
        descriptive=(_tag_safe(descriptive),),
        moving=tuple(_tag_safe(t) for t in moving),
    )


def publish_date(
    created: Sequence[str | None], env_epoch: str | None, recorded: str | None, today: str
) -> str:
    """The descriptive tag's date, YYYYMMDD (see the module docstring for the order)."""
    for stamp in created:
        if stamp:
            try:
                when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                continue
            if when.year > 2000:
                return when.astimezone(UTC).strftime("%Y%m%d")
    if env_epoch:
        try:
            return datetime.fromtimestamp(int(env_epoch), tz=UTC).strftime("%Y%m%d")
        except ValueError:
            raise UsageError(f"SOURCE_DATE_EPOCH={env_epoch!r} is not a number of seconds.") \
                from None
    return recorded or today


def plan_publish(
    *,
    flavor: str,
    repository: ImageRef,
    lock: Lock,
    lock_hash: str,
    images: Sequence[LocalImage],
    reports: Mapping[str, tuple[Path, Mapping[str, Any] | None]],
    recorded_date: str | None,
    env_epoch: str | None,
    today: str,
) -> PublishPlan:
    """The whole publication, or PublishRefusedError naming each image's missing gate."""
    if not images:
        raise UsageError(f"No image of flavor {flavor!r} to publish: run `lockdock build` first.")
    if repository.tag or repository.digest:
        raise UsageError(
            f"--registry {repository} names a tag or digest: give the repository only "
            "(REGISTRY/NAME); lockdock chooses the tags."
        )
    refusals = []
    for image in images:
        path, report = reports[image.platform]
        reason = gate_refusal(report, path, flavor, image)
        if reason:
            refusals.append(reason)
        built_from = image.labels.get(LOCK_SHA256_LABEL)
        if built_from and built_from != lock_hash:
            refusals.append(
                f"image {image.digest} ({image.platform}) was built from a lock with SHA-256 "
                f"{built_from[:12]}…, not from {lock.path} ({lock_hash[:12]}…): its "
                "content-addressed tag would name the wrong lock. Rebuild it."
            )
    if refusals:
        raise PublishRefusedError(
            f"Refusing to publish {flavor} to {repository.name}: " + " ".join(refusals)
        )
    platforms = [DOCKER_TO_CONDA.get(i.platform, i.platform) for i in images]
    first = next((p for p in platforms if p in lock.platforms), None)
    if first is None:
        raise SpecError(
            f"Lock {lock.path} has none of the platforms being published "
            f"({', '.join(i.platform for i in images)})."
        )
    descriptor = lock_descriptor(lock.select(first, sorted(lock.categories)))
    date = publish_date([i.created for i in images], env_epoch, recorded_date, today)
    return PublishPlan(
        flavor=flavor,
        repository=repository,
        lock_path=lock.path,
        lock_hash=lock_hash,
        date=date,
        images=tuple(sorted(images, key=lambda i: i.platform)),
        tags=plan_tags(flavor, lock_hash, descriptor, date),
        gate_reports={p: reports[p][0] for p in sorted(reports)},
    )


def publication_record(
    plan: PublishPlan, digest: str, platform_digests: Mapping[str, str], root: Path
) -> dict[str, Any]:
    def rel(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            return str(path)

    return {
        "flavor": plan.flavor,
        "repository": plan.repository.name,
        "digest": digest,
        "reference": f"{plan.repository.name}:{plan.tags.content_addressed}@{digest}",
        "tags": list(plan.tags.in_order),
        "lock": rel(plan.lock_path),
        "lock_hash": plan.lock_hash,
        "date": plan.date,
        "platforms": {
            image.platform: {
                "digest": platform_digests[image.platform],
                "image_id": image.digest,
                "tag": plan.platform_tag(image),
                "gate_report": rel(plan.gate_reports[image.platform]),
            }
            for image in plan.images
        },
    }


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
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def read_images_lock(root: Path) -> dict[str, Any] | None:
    path = root / IMAGES_LOCK
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise SpecError(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}): "
            f"{error.msg}. Fix or delete it; publish rewrites it."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SpecError(f"{path} is not an images.lock.json: it needs an `images` list.")
    return data


def recorded_date(existing: Mapping[str, Any] | None, flavor: str, repository: str,
                  digests: Iterable[str]) -> str | None:
    wanted = set(digests)
    for record in (existing or {}).get("images", []):
        if (record.get("flavor"), record.get("repository")) != (flavor, repository):
            continue
        ids = {p.get("image_id") for p in record.get("platforms", {}).values()}
        if ids == wanted:
            return str(record.get("date")) or None
    return None


# --- edges -----------------------------------------------------------------------------


def _is_transient(message: str) -> bool:
    return bool(_TRANSIENT.search(message))


def _with_retries(action: Callable[[], str], what: str, attempts: int, backoff: float) -> str:
    """Run ``action``; retry transient RegistryErrors up to ``attempts`` tries in all."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except RegistryError as error:
            if attempt == attempts or not _is_transient(error.message):
                raise
            delay = backoff * 2 ** (attempt - 1)
            say(f"  {what}: transient registry error ({error.message}); "
                f"retry {attempt}/{attempts - 1} in {delay:g}s")
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class DockerPusher:
    """Tag and push through the Docker SDK; index creation through buildx imagetools.

    The engine is connected on first use: a merge (indexes only) needs no engine.
    """

    def __init__(self, client: Any = None, *, attempts: int | None = None,
                 backoff: float | None = None) -> None:
        self._client = client
        self.attempts = attempts or int(os.environ.get("LOCKDOCK_PUSH_ATTEMPTS", "4"))
        self.backoff = backoff if backoff is not None else float(
            os.environ.get("LOCKDOCK_PUSH_BACKOFF", "2"))

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            try:
                client = docker.from_env()
                client.ping()
            except Exception as error:
                raise EngineError(
                    f"The Docker engine does not answer ({error}).",
                    hint="Start it (as root: `ci/engine start`).",
                ) from None
            self._client = client
        return self._client

    def inspect(self, reference: str) -> LocalImage:
        import docker.errors

        try:
            image = self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            raise UsageError(f"No image {reference!r} in the local engine.") from None
        except docker.errors.APIError as error:
            raise EngineError(f"The Docker engine failed to inspect {reference}: {error}") \
                from None
        attrs = image.attrs
        platform = f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture', 'amd64')}"
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return LocalImage(platform=platform, reference=reference, digest=str(image.id),
                          created=attrs.get("Created"), labels=dict(labels))

    def _push_once(self, image: LocalImage, repository: str, tag: str) -> str:
        import docker.errors

        try:
            self.client.api.tag(image.digest, repository, tag, force=True)
            digest = None
            for line in self.client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in line or "errorDetail" in line:
                    detail = line.get("errorDetail") or {}
                    message = str(detail.get("message") or line.get("error"))
                    raise RegistryError(f"Pushing {repository}:{tag} failed: {message}")
                aux = line.get("aux") or {}
                # classic store: an aux record; containerd store: "tag: digest: sha256:… size: n"
                found = _PUSHED_DIGEST.search(str(line.get("status", "")))
                digest = aux.get("Digest") or (found.group(1) if found else None) or digest
        except docker.errors.APIError as error:
            raise RegistryError(f"Pushing {repository}:{tag} failed: {error.explanation or error}")\
                from None
        except OSError as error:  # the engine's socket went away
            raise EngineError(f"The Docker engine stopped answering while pushing: {error}") \
                from None
        if not digest:
            raise RegistryError(f"Pushing {repository}:{tag} reported no digest.")
        return str(digest)

    def push(self, image: LocalImage, repository: str, tag: str) -> str:
        return _with_retries(lambda: self._push_once(image, repository, tag),
                             f"push {repository}:{tag}", self.attempts, self.backoff)

    def _index_once(self, repository: str, tag: str, sources: Sequence[str]) -> str:
        command = ["docker", "buildx", "imagetools", "create", "-t", f"{repository}:{tag}",
                   *sources]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RegistryError(
                f"Creating the index {repository}:{tag} failed: "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return ""

    def create_index(self, repository: str, tag: str, sources: Sequence[str]) -> None:
        _with_retries(lambda: self._index_once(repository, tag, sources),
                      f"index {repository}:{tag}", self.attempts, self.backoff)


def execute(
    plan: PublishPlan,
    pusher: Any,
    resolve: Callable[[ImageRef], str],
    report: Callable[[str], None] = say,
) -> tuple[str, dict[str, str]]:
    """Push in plan order; returns (digest the tags point at, per-platform digests).

    Each tag is read back from the registry and must name the expected digest, so a tag
    that silently points elsewhere is caught before the record is written.
    """
    repo = plan.repository.name
    platform_digests: dict[str, str] = {}
    for image in plan.images:
        tag = plan.platform_tag(image)
        if image.reference == f"{repo}@{image.digest}":  # merge: already in the registry
            platform_digests[image.platform] = image.digest
            continue
        report(f"push {repo}:{tag} ({image.platform}, image {image.digest[:19]})")
        platform_digests[image.platform] = pusher.push(image, repo, tag)
    if plan.platform_only:
        for image in plan.images:
            tag = plan.platform_tag(image)
            current = resolve(plan.repository.with_tag(tag))
            if current != platform_digests[image.platform]:
                raise RegistryError(f"Registry says {repo}:{tag} is {current}, expected "
                                    f"{platform_digests[image.platform]} after pushing.")
        return "", platform_digests
    if not plan.multi_platform:
        image = plan.images[0]
        digest = platform_digests[image.platform]
        for tag in plan.tags.in_order[1:]:
            report(f"push {repo}:{tag}")
            pushed = pusher.push(image, repo, tag)
            if pushed != digest:
                raise RegistryError(
                    f"{repo}:{tag} was pushed as {pushed}, but {plan.tags.content_addressed} "
                    f"is {digest}: the registry rewrote the manifest; refusing to go on."
                )
    else:
        sources = [f"{repo}@{platform_digests[i.platform]}" for i in plan.images]
        for tag in plan.tags.in_order:
            report(f"index {repo}:{tag} over {', '.join(i.platform for i in plan.images)}")
            pusher.create_index(repo, tag, sources)
        digest = resolve(plan.repository.with_tag(plan.tags.content_addressed))
    for tag in plan.tags.in_order:
        current = resolve(plan.repository.with_tag(tag))
        if current != digest:
            raise RegistryError(
                f"Registry says {repo}:{tag} is {current}, expected {digest} after pushing."
            )
    return digest, platform_digests


def write_sboms(plan: PublishPlan) -> list[Path]:
    """The CycloneDX SBOM of each platform's lock, next to its gate report."""
    from lockdock.sbom import SBOM_FILE, write_sbom

    written = []
    for image in plan.images:
        out = plan.gate_reports[image.platform].parent / SBOM_FILE
        conda_platform = DOCKER_TO_CONDA.get(image.platform, image.platform)
        written.append(write_sbom(plan.lock_path, conda_platform, out, name=plan.flavor))
    return written


def load_report(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise PublishRefusedError(
            f"Gate report {path} is not valid JSON ({error.msg} at line {error.lineno}): "
            "rerun `lockdock test`."
        ) from None
    if not isinstance(data, dict):
        raise PublishRefusedError(f"Gate report {path} is not a JSON object: rerun the gates.")
    return data


def registry_images(client: Any, repository: ImageRef, lock: Lock, content_tag: str) \
        -> list[LocalImage]:
    """The per-platform images ``publish --platform-only`` pushed, read from the registry."""
    images = []
    for platform, conda_platform in sorted(DOCKER_TO_CONDA.items()):
        if conda_platform not in lock.platforms:
            continue
        ref = repository.with_tag(arch_tag(content_tag, platform))
        digest = client.tag_digest_or_none(ref)
        if digest is None:
            continue
        config = client.image_config(ref)
        actual = f"{config.get('os', 'linux')}/{config.get('architecture', '')}"
        if actual != platform:
            raise RegistryError(f"{ref} is a {actual} image, not {platform}.")
        labels = (config.get("config") or {}).get("Labels") or {}
        images.append(LocalImage(platform=platform, reference=f"{repository.name}@{digest}",
                                 digest=digest, created=config.get("created"),
                                 labels=dict(labels)))
    return images


def publish(
    project_root: Path,
    flavor: str,
    lock: Lock,
    repository_text: str,
    image_refs: Sequence[str],
    *,
    mode: str = "all",
    pusher: Any = None,
    registry: Any = None,
    report: Callable[[str], None] = say,
    today: str | None = None,
) -> dict[str, Any]:
    """``lockdock publish``: check gates, push in order, record in images.lock.json.

    ``mode``: ``all`` (push the given images and every tag); ``platform`` (push each given
    image under ``<content tag>-<arch>`` only: one CI runner per platform); ``merge`` (take
    those per-platform images from the registry, then index, tags and record as ``all``).
    """
    repository = parse_reference(repository_text)
    if repository.tag or repository.digest:
        raise UsageError(
            f"--registry {repository_text} names a tag or digest: give REGISTRY/NAME only; "
            "lockdock chooses the tags."
        )
    if registry is None:
        from lockdock.registry import RegistryClient

        registry = RegistryClient()
    pusher = pusher or DockerPusher()
    lock_hash = sha256_file(lock.path)
    if mode == "merge":
        content_tag = plan_tags(flavor, lock_hash, "", "").content_addressed
        images = registry_images(registry, repository, lock, content_tag)
        if len(images) < 2:
            raise UsageError(
                f"--merge found {len(images)} per-platform image(s) of {flavor} in "
                f"{repository.name} (tags {content_tag}-<arch>): it needs two. Push each "
                "platform with --platform-only first, or publish a single platform directly."
            )
    else:
        images = [pusher.inspect(ref) for ref in image_refs]
    platforms = [i.platform for i in images]
    if len(set(platforms)) != len(platforms):
        raise UsageError(f"Two images for one platform given: {', '.join(image_refs)}.")
    reports = {}
    for image in images:
        path = gate_report_path(project_root, flavor, image.digest)
        reports[image.platform] = (path, load_report(path))
    existing = read_images_lock(project_root)
    plan = plan_publish(
        flavor=flavor,
        repository=repository,
        lock=lock,
        lock_hash=lock_hash,
        images=images,
        reports=reports,
        recorded_date=recorded_date(existing, flavor, repository.name,
                                    [i.digest for i in images]),
        env_epoch=os.environ.get("SOURCE_DATE_EPOCH"),
        today=today or datetime.now(UTC).strftime("%Y%m%d"),
    )
    write_sboms(plan)
    if mode == "platform":
        plan = dataclasses.replace(plan, platform_only=True)
        _digest, platform_digests = execute(plan, pusher, registry.resolve, report)
        for image in plan.images:
            report(f"pushed {repository.name}:{plan.platform_tag(image)}@"
                   f"{platform_digests[image.platform]} (no moving tag, nothing recorded)")
        return {"platforms": platform_digests}
    digest, platform_digests = execute(plan, pusher, registry.resolve, report)
    record = publication_record(plan, digest, platform_digests, project_root)
    write_text_atomic(project_root / IMAGES_LOCK,
                      render_images_lock(updated_images_lock(existing, record)))
    report(f"published {record['reference']}")
    return record


def default_image_refs(project_root: Path, flavor: str, lock_sha256: str) -> list[str]:
    """The images ``lockdock build`` recorded for ``flavor`` from this lock, one per platform
    (``.lockdock/builds/<flavor>/<arch>.json``): both platforms built here give an index.

    Without such a record: what ``lockdock test`` gates by default (the native build).
    """
    from lockdock.gates import default_image_reference
    from lockdock.image import build_record_path

    refs = []
    for platform in sorted(DOCKER_TO_CONDA):
        try:
            record = json.loads(build_record_path(project_root, flavor, platform).read_text(
                encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and record.get("lock_sha256") == lock_sha256 \
                and record.get("reference"):
            refs.append(str(record["reference"]))
    return refs or [default_image_reference(project_root, flavor)]


def publish_flavor(project_dir: Path, flavor: str, repository: str,
                   images: Sequence[str], mode: str = "all") -> dict[str, Any]:
    """The CLI's entry: the flavor's lock and images, then ``publish``."""
    from lockdock.installer.lockfile import read_lock
    from lockdock.spec import load_project

    project = load_project(project_dir)
    (chosen,) = project.select([flavor])
    lock = read_lock(chosen.lock_path)
    refs = list(images)
    if not refs and mode != "merge":
        refs = default_image_refs(project.root, flavor, sha256_file(lock.path))
    return publish(project.root, flavor, lock, repository, refs, mode=mode)
