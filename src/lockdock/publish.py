"""``lockdock publish``: check the gates, push in order, record in ``images.lock.json``.

What may be published and under which tags is planned purely in ``lockdock.publish_plan``;
this module does the pushing (``DockerPusher``, ``execute``) and the orchestration
(``publish``, ``publish_flavor``). Records are read and written through
``lockdock.workspace``.

Failure and rerun: pushes go in plan order (content-addressed tag, descriptive, moving) and
stop at the first failure, so a failed run never moves a moving tag. ``images.lock.json`` is
written (atomically) only after every push succeeded and each pushed tag was read back from
the registry with the expected digest. A rerun pushes again: the registry already has the
blobs, each tag is set to the same manifest, and the record comes out byte-identical, so
re-publishing is idempotent.

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
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockdock.accelerators import accelerator
from lockdock.errors import EngineError, RegistryError, UsageError
from lockdock.fsutil import sha256_file
from lockdock.installer.lockfile import Lock
from lockdock.platform import IMAGE_PLATFORMS, Platform
from lockdock.progress import say
from lockdock.publish_plan import (
    LocalImage,
    PublishPlan,
    plan_publish,
    publication_record,
    recorded_date,
)
from lockdock.registry import ImageRef, local_image_option, parse_reference
from lockdock.spec import Flavor
from lockdock.tags import arch_tag, content_tag
from lockdock.workspace import Workspace, updated_images_lock

_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")
_TRANSIENT = re.compile(
    r"connection refused|connection reset|broken pipe|\bEOF\b|timeout|timed out|"
    r"temporar|unavailable|too many requests|\b(429|500|502|503|504)\b|"
    r"server misbehaving|i/o timeout|use of closed network connection",
    re.IGNORECASE,
)


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
        #: Local tags made or moved for pushing -> the image id each named before (None: none).
        self._tagged: dict[str, str | None] = {}
        from lockdock.textio import env_number

        self.attempts = attempts or int(env_number("LOCKDOCK_PUSH_ATTEMPTS", 4, minimum=1))
        self.backoff = backoff if backoff is not None else env_number(
            "LOCKDOCK_PUSH_BACKOFF", 2, integer=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            from lockdock.engine import docker_client

            self._client = docker_client()
        return self._client

    def inspect(self, reference: str) -> LocalImage:
        import docker.errors

        from lockdock.engine import lookup_problem

        try:
            image = self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            raise UsageError(f"No image {reference!r} in the local engine.") from None
        except docker.errors.APIError as error:  # 4xx: the reference's fault (exit 2)
            raise lookup_problem(reference, error.status_code,
                                 error.explanation or str(error)) from None
        attrs = image.attrs
        platform = f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture', 'amd64')}"
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return LocalImage(platform=platform, reference=reference, digest=str(image.id),
                          created=attrs.get("Created"), labels=dict(labels))

    def _remember(self, reference: str) -> None:
        """Note what the local ``reference`` names before tagging it (None: nothing), once."""
        import docker.errors

        if reference in self._tagged:
            return
        try:
            self._tagged[reference] = str(self.client.images.get(reference).id)
        except docker.errors.ImageNotFound:
            self._tagged[reference] = None
        except docker.errors.APIError:
            pass  # unknown: undo_local_tags leaves it alone

    def undo_local_tags(self, report: Callable[[str], None] = say) -> None:
        """Put back every local tag this pusher made or moved for pushing: a failed publish
        leaves the engine's names as they were. A tag that is its image's only name stays
        (removing it would delete the image)."""
        import docker.errors

        tagged, self._tagged = self._tagged, {}
        for reference, previous in reversed(tagged.items()):
            try:
                if previous is not None:
                    repository, tag = reference.rsplit(":", 1)
                    self.client.api.tag(previous, repository, tag, force=True)
                elif len(self.client.images.get(reference).tags) > 1:
                    self.client.api.remove_image(reference, noprune=True)
                else:
                    report(f"  left the local tag {reference}: it is its image's only name")
            except (docker.errors.DockerException, OSError) as error:
                report(f"  could not remove the local tag {reference}: {error}")

    def _push_once(self, image: LocalImage, repository: str, tag: str) -> str:
        import docker.errors

        try:
            self._remember(f"{repository}:{tag}")
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
        conda_platform = Platform.image(image.platform).subdir
        written.append(write_sbom(plan.lock_path, conda_platform, out, name=plan.flavor))
    return written


def registry_images(client: Any, repository: ImageRef, lock: Lock, content_tag: str) \
        -> list[LocalImage]:
    """The per-platform images ``publish --platform-only`` pushed, read from the registry."""
    images = []
    for candidate in IMAGE_PLATFORMS:
        platform = str(candidate.docker)
        if candidate.subdir not in lock.platforms:
            continue
        ref = repository.with_tag(arch_tag(content_tag, candidate))
        digest = client.tag_digest_or_none(ref)
        if digest is None:
            continue
        config = client.image_config(ref)  # checked: strings, labels an object of strings
        actual = f"{config.get('os') or 'linux'}/{config.get('architecture') or ''}"
        if actual != platform:
            raise RegistryError(f"{ref} is a {actual} image, not {platform}.")
        labels = (config.get("config") or {}).get("Labels") or {}
        images.append(LocalImage(platform=platform, reference=f"{repository.name}@{digest}",
                                 digest=digest, created=config.get("created"),
                                 labels=dict(labels)))
    return images


def publish(
    project_root: Path,
    flavor: Flavor,
    lock: Lock,
    repository_text: str,
    image_refs: Sequence[str],
    *,
    lock_sha256: str | None = None,
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
    The moving tags and the accelerator (what the descriptive tag names) are the flavor's.
    """
    name = flavor.name
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
    lock_hash = lock_sha256 or sha256_file(lock.path)
    if mode == "merge":
        content = content_tag(name, lock_hash)
        images = registry_images(registry, repository, lock, content)
        if len(images) < 2:
            raise UsageError(
                f"--merge found {len(images)} per-platform image(s) of {name} in "
                f"{repository.name} (tags {content}-<arch>): it needs two. Push each "
                "platform with --platform-only first, or publish a single platform directly."
            )
    else:
        images = [pusher.inspect(ref) for ref in image_refs]
    platforms = [i.platform for i in images]
    if len(set(platforms)) != len(platforms):
        raise UsageError(f"Two images for one platform given: {', '.join(image_refs)}.")
    workspace = Workspace(project_root)
    reports = {}
    for image in images:
        path = workspace.gate_path(name, image.digest)
        reports[image.platform] = (path, workspace.read_gate(name, image.digest))
    existing = workspace.read_images_lock()
    plan = plan_publish(
        flavor=name,
        accelerator=accelerator(flavor.accelerator, source=str(flavor.directory / "flavor.toml")),
        moving_tags=flavor.moving_tags,
        repository=repository,
        lock=lock,
        lock_hash=lock_hash,
        images=images,
        reports=reports,
        recorded_date=recorded_date(existing, name, repository.name,
                                    [i.digest for i in images]),
        env_epoch=os.environ.get("SOURCE_DATE_EPOCH"),
        today=today or datetime.now(UTC).strftime("%Y%m%d"),
    )
    write_sboms(plan)
    try:
        if mode == "platform":
            plan = dataclasses.replace(plan, platform_only=True)
            _digest, platform_digests = execute(plan, pusher, registry.resolve, report)
            for image in plan.images:
                report(f"pushed {repository.name}:{plan.platform_tag(image)}@"
                       f"{platform_digests[image.platform]} (no moving tag, nothing recorded)")
            return {"platforms": platform_digests}
        digest, platform_digests = execute(plan, pusher, registry.resolve, report)
        from lockdock.git import git_facts

        record = publication_record(plan, digest, platform_digests, project_root,
                                    revision=git_facts(project_root)[1])
        workspace.write_images_lock(updated_images_lock(existing, record))
    except BaseException:  # Ctrl-C too: no local tag left behind by a run that did not finish
        undo = getattr(pusher, "undo_local_tags", None)
        if undo is not None:
            undo(report)
        raise
    report(f"published {record['reference']}")
    return record


def default_image_refs(project_root: Path, flavor: str, lock_sha256: str) -> list[str]:
    """The images ``lockdock build`` recorded for ``flavor`` from this lock, one per platform
    (``.lockdock/builds/<flavor>/<arch>.json``): both platforms built here give an index.

    Without such a record: what ``lockdock test`` gates by default (the native build).
    """
    from lockdock.gates import default_image_reference

    workspace = Workspace(project_root)
    refs = []
    for platform in IMAGE_PLATFORMS:
        record = workspace.read_build_record(flavor, platform)
        if record is not None and record.lock_sha256 == lock_sha256:
            refs.append(record.reference)
    return refs or [default_image_reference(project_root, flavor)]


def publish_flavor(project_dir: Path, flavor: str, repository: str,
                   images: Sequence[str], mode: str = "all") -> dict[str, Any]:
    """The CLI's entry: the flavor's lock and images, then ``publish``."""
    from lockdock.installer.lockfile import read_lock
    from lockdock.spec import load_project

    refs = [local_image_option(ref) for ref in images]
    project = load_project(project_dir)
    (chosen,) = project.select([flavor])
    lock = read_lock(chosen.lock_path)
    lock_sha256 = sha256_file(lock.path)
    if not refs and mode != "merge":
        refs = default_image_refs(project.root, flavor, lock_sha256)
    return publish(project.root, chosen, lock, repository, refs, lock_sha256=lock_sha256,
                   mode=mode)
