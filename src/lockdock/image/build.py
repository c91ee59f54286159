"""``lockdock build``: one flavor for one platform into the local engine, tagged.

The image is exported under a temporary name and tagged only after the build succeeded, so a
failed build leaves no content-addressed tag; a build whose content-addressed tag exists is a
no-op (its lock is unchanged). The build record (``Workspace.build_record_path``) says what
was built; ``test`` and ``publish`` read it for their defaults. Its path is probed before any
work, and a record that still cannot be written takes the build's tags back.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockdock import engine
from lockdock.buildopts import (
    DEFAULT_COMPRESSION,
    cache_argv,
    check_cache_to,
    with_compression,
)
from lockdock.context import FlavorContext, resolve_flavor
from lockdock.engine import (
    image_id,
    local_image_id,
    native_platform,
    run_buildx,
    tag,
    untag,
)
from lockdock.errors import BuildError, LocalFileError, RegistryError, SpecError
from lockdock.fsutil import local_file_error, probe_writable
from lockdock.image.plan import (
    BuildPlan,
    buildx_argv,
    check_base_image,
    check_image_name,
    image_output,
    planned_tags,
)
from lockdock.image.stage import prepare_build
from lockdock.progress import say
from lockdock.tags import local_name
from lockdock.workspace import BuildRecord, Workspace


@dataclass(frozen=True)
class BuildResult:
    flavor: str
    platform: str
    reference: str  # the content-addressed tag
    digest: str
    tags: tuple[str, ...]
    built: bool  # False: the tag existed and nothing was done
    record: Path | None = None


def _read_metadata(path: Path) -> dict[str, Any]:
    """buildx's --metadata-file; {} when absent or not a JSON object (no digest learnt)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def build(
    context: FlavorContext,
    *,
    base_image: str | None = None,
    builder: str | None = None,
    name: str | None = None,
    force: bool = False,
    store: Path | None = None,
    no_cache: bool = False,
    compression: str = DEFAULT_COMPRESSION,
    cache_from: tuple[str, ...] = (),
    cache_to: tuple[str, ...] = (),
) -> BuildResult:
    """Build ``context``'s flavor for its platform and tag it (see the module docstring)."""
    flavor, platform = context.flavor.name, str(context.platform.docker)
    if name is not None:  # the options' own mistakes, named as options, before the engine
        check_image_name(name, flavor)
    if base_image is not None:  # the Dockerfile's default is prepare_build's to read
        check_base_image(base_image, None)
    references = planned_tags(context, native_platform()).named(
        name if name is not None else local_name(flavor))
    existing = local_image_id(references[0])
    if existing and not force:
        say(unchanged_message(context.workspace, flavor, platform, references[0], existing))
        print(existing)
        return BuildResult(flavor, platform, references[0], existing, references, built=False)
    cache = cache_argv(cache_from, ())  # lockdock.buildopts: checked before any work
    export = cache_argv(cache_from, cache_to) if cache_to else []
    check_cache_to(builder, cache_to)
    check_record_target(context.workspace.build_record_path(flavor, platform))
    plan = prepare_build(context, base_image=base_image, builder=builder, name=name,
                         store=store)
    temporary = f"{plan.name}:building-{os.getpid()}-{os.urandom(4).hex()}"
    with tempfile.TemporaryDirectory(prefix="lockdock-build.") as tmp:
        metadata = Path(tmp) / "metadata.json"
        output = image_output(temporary, rewrite_timestamps=plan.rewrite_timestamps,
                              tarball=plan.loads_tarball)
        argv = buildx_argv(plan, output=with_compression(output, compression),
                           metadata_file=metadata, no_cache=no_cache)
        argv[-1:-1] = cache  # before the context path, buildx_argv's last element
        say(f"building {plan.flavor} ({plan.platform}) with SOURCE_DATE_EPOCH={plan.epoch}")
        if plan.rewrite_timestamps:
            say(f"{plan.flavor}'s Dockerfile adds layers ({plan.flavor_layers[0]}"
                f"{', …' if len(plan.flavor_layers) > 1 else ''}): BuildKit rewrites every "
                "layer's timestamps to SOURCE_DATE_EPOCH (each layer recompressed once more)")
        try:
            run_buildx(argv, f"The build of {plan.flavor} ({plan.platform})",
                       load=plan.loads_tarball)
            digest = str(_read_metadata(metadata).get("containerimage.digest") or "")
            digest = digest or image_id(temporary)
            previous = {reference: local_image_id(reference) for reference in plan.references}
            try:
                tag(temporary, plan.references)
                record = context.workspace.write_build_record(BuildRecord(
                    flavor=plan.flavor, platform=plan.platform, reference=plan.reference,
                    digest=digest, tags=plan.references, lock=plan.lock_path.as_posix(),
                    lock_sha256=plan.lock_sha256, source_date_epoch=plan.epoch,
                    labels=dict(plan.labels), revision=plan.revision, compression=compression,
                    base_image=plan.base_image, builder=plan.builder,
                ))  # fmt: skip
            except LocalFileError as error:
                restore_tags(previous)
                raise LocalFileError(
                    f"{error.message} The build of {plan.flavor} ({plan.platform}) was "
                    "undone: its tags were removed (an image they named before is tagged "
                    f"again); after the fix, `lockdock build {plan.flavor}` builds and "
                    "records it."
                ) from None
            except BaseException:
                restore_tags(previous)
                raise
        finally:
            untag(temporary)
    say(f"built {plan.flavor} ({plan.platform}): {', '.join(plan.references)}")
    print(digest)
    if export:
        export_cache(plan, export, cache_to)
    return BuildResult(plan.flavor, plan.platform, plan.reference, digest, plan.references,
                       True, record)


def unchanged_message(workspace: Workspace, flavor: str, platform: str, reference: str,
                      existing: str) -> str:
    """What a build that finds its content-addressed tag says. The build record cannot be
    written afresh here: how the image was built (compression, builder, base image option,
    git revision) is in no image, only in the record of the build that made it."""
    unchanged = f"{reference} already exists ({existing}): its lock is unchanged, nothing to build"
    path = workspace.build_record_path(flavor, platform)
    try:
        record = workspace.read_build_record(flavor, platform)
    except (SpecError, LocalFileError):  # unreadable: as good as none, --force rewrites it
        record = None
    if record is not None and record.reference == reference:
        return f"{unchanged} (--force rebuilds)."
    state = f"names another image, {record.reference}" if record else "is missing"
    return (f"{unchanged}, but the build record {path} {state}, and it cannot be written "
            "from the image (how it was built is known only to the build that made it): "
            "`lockdock inspect`, `test` and `publish` will not default to this image. Pass "
            "--force to rebuild it and record the build.")


def check_record_target(path: Path) -> None:
    """LocalFileError (16) before any work when the build record cannot be written
    (``fsutil.probe_writable``): without it a build would fail after tagging."""
    try:
        probe_writable(path)
    except OSError as error:
        raise local_file_error(path, error, "write") from None


def restore_tags(previous: dict[str, str | None]) -> None:
    """Each reference back to the image it named before the build (``None``: none)."""
    for reference, image in previous.items():
        with contextlib.suppress(Exception):  # best effort: the failure that led here wins
            if image is None:
                untag(reference)
            else:
                tag(image, [reference])


def export_cache(plan: BuildPlan, cache: list[str], cache_to: tuple[str, ...]) -> None:
    """The BuildKit cache, exported after the image is built, tagged and recorded: a cache
    that cannot be written (a registry refusing, no credentials) costs the next build its
    speed, not this build its image. RegistryError (13) naming the cache when it fails."""
    with tempfile.TemporaryDirectory(prefix="lockdock-cache.") as tmp:
        argv = buildx_argv(plan, output="type=cacheonly", metadata_file=Path(tmp) / "m.json")
        argv[-1:-1] = cache
        say(f"exporting the build cache to {', '.join(cache_to)}")
        try:
            run_buildx(argv, f"The cache export of {plan.flavor} ({plan.platform})")
        except BuildError as error:
            raise RegistryError(
                f"The image {plan.reference} was built, tagged and recorded, but its build "
                f"cache could not be written to {', '.join(cache_to)}: {error.message}"
            ) from None


def build_command(
    context: FlavorContext,
    *,
    base_image: str | None = None,
    builder: str | None = None,
    name: str | None = None,
    force: bool = False,
    compression: str = DEFAULT_COMPRESSION,
    cache_from: tuple[str, ...] = (),
    cache_to: tuple[str, ...] = (),
) -> BuildResult:
    """What ``lockdock build`` and ``nox -s build-<flavor>`` run, on a flavor the CLI resolved
    once (``ready_to_build``: project, lock, freshness, engine)."""
    return build(context, base_image=base_image, builder=builder, name=name, force=force,
                 compression=compression, cache_from=cache_from, cache_to=cache_to)


def ready_to_build(
    project_dir: Path, flavor: str, platform: str | None, builder: str | None,
    check_fresh: Callable[[FlavorContext], None],
) -> FlavorContext:
    """The flavor resolved once and ``check_fresh`` on it (the CLI passes ``lock --check``;
    image never imports lock), then the engine: the project's own mistakes are named first,
    whatever state the engine is in, and both checks come before any work."""
    context = resolve_flavor(project_dir, flavor, platform)
    check_fresh(context)
    engine.check_engine(builder)  # through the module: tests fake the engine here
    return context
