"""Command line: parse and delegate (lockdock.toplevel turns errors into messages and exit codes).

Each command is a few lines that call into the pipeline module it names; no logic here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lockdock.platform import DOCKER_PLATFORMS
from lockdock.toplevel import run_guarded

if TYPE_CHECKING:
    from lockdock.context import FlavorContext


class _Context:
    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir


pass_ctx = click.make_pass_decorator(_Context)


def _non_empty(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse ``--platform ''``: it would silently mean the default (this machine's)."""
    given = value if isinstance(value, tuple) else (value,)
    if any(item is not None and not str(item).strip() for item in given):
        raise click.BadParameter(
            "it is empty: give a value, or leave the option out for its default.", ctx, param)
    return value


def _non_empty_path(ctx: click.Context, param: click.Parameter, value: str | None) \
        -> Path | None:
    """Refuse ``--prefix ''``, which would otherwise mean the current directory (``Path('')``
    is ``.``: checked before the conversion)."""
    if value == "":
        raise click.BadParameter("it is empty: give a path ('.' for the current directory).",
                                 ctx, param)
    return None if value is None else Path(value)


_JOBS = click.IntRange(min=1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C",
    "--project",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Project directory (holds environment.yml and images/).",
)
@click.version_option(package_name="lockdock")
@click.pass_context
def cli(ctx: click.Context, project_dir: Path) -> None:
    """Lock, fetch, build, gate, publish and pin reproducible ML images."""
    ctx.obj = _Context(project_dir)


# --- lock (spec -> lock) -------------------------------------------------------------


@cli.command()
@click.argument("flavors", nargs=-1)
@click.option(
    "--check",
    is_flag=True,
    help="Offline, no solve: exit 0 when every lock matches its inputs, else exit 6 "
    "naming each stale flavor and platform (a missing lock is stale).",
)
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="NAME=URL",
    help="Fetch channel NAME (as written in environment.yml) from URL (http(s)://, file:// "
    "or a local directory); repeatable. Also read from $LOCKDOCK_MIRRORS "
    "('NAME=URL NAME=URL'); --mirror wins.",
)
@click.option("--with-cuda", "with_cuda", default=None, metavar="VERSION",
              help="As conda-lock's --with-cuda: default virtual packages with __cuda=VERSION "
              "('default': conda-lock's own default). Replaces the flavor's setting.")
@click.option("--without-cuda", is_flag=True, help="As conda-lock's --without-cuda (lockdock's "
              "default): no __cuda. Replaces the flavor's setting.")
@click.option("--virtual-package-spec", "virtual_package_spec", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="As conda-lock's --virtual-package-spec FILE. Replaces the flavor's setting.")
@pass_ctx
def lock(ctx: _Context, flavors: tuple[str, ...], check: bool, mirrors: tuple[str, ...],
         with_cuda: str | None, without_cuda: bool,
         virtual_package_spec: Path | None) -> None:  # fmt: skip
    """Solve environment.yml (+ images/<flavor>/ overlays) into conda-lock.yml per flavor.

    FLAVORS default to every folder of images/ but base/. The conda part is solved with
    py-rattler for every platform in `platforms:`, the pip part with uv against PyPI. The
    default flavor `cpu` is written to ./conda-lock.yml, others to
    images/<flavor>/conda-lock.yml.

    \b
    Virtual packages: images/<flavor>/virtual-packages.yml (conda-lock's
    --virtual-package-spec format). Without it, no __cuda, and per platform:
      linux-64       __unix=0 __linux=5.10 __glibc=2.28 __archspec=1=x86_64
      linux-aarch64  __unix=0 __linux=5.10 __glibc=2.28 __archspec=1=aarch64
      osx-64/arm64   __unix=0 __osx=11.0 __archspec=1=<arch>;  win-64  __win=0
    """
    from lockdock.lock import lock_command
    from lockdock.virtual_packages import VirtualPackageOptions

    vpkgs = VirtualPackageOptions(virtual_package_spec, with_cuda, without_cuda)
    results = lock_command(ctx.project_dir, flavors, mirrors, check, vpkgs)
    if check:
        click.echo("All locks match their inputs.", err=True)
    for result in results:
        counts = ", ".join(f"{p}: {c} conda + {n} pip" for p, (c, n) in result.counts.items())
        click.echo(f"Locked {result.flavor} -> {result.lock_path} ({counts})", err=True)


# --- fetch / install (lock -> store -> prefix) ---------------------------------------


@cli.command()
@click.argument("flavors", nargs=-1)
@click.option("--platform", "platforms", multiple=True, callback=_non_empty,
              help="Conda subdir (repeatable; default: all locked).")
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Artifact store (default: <project>/.lockdock/store).",
)
@click.option("--check", is_flag=True, help="Offline: report what is missing from the store.")
@click.option("--jobs", type=_JOBS, default=4, show_default=True, help="Parallel downloads.")
@pass_ctx
def fetch(
    ctx: _Context,
    flavors: tuple[str, ...],
    platforms: tuple[str, ...],
    store: Path | None,
    check: bool,
    jobs: int,
) -> None:
    """Download every locked artifact into the hash-verified store."""
    from lockdock.fetch import build_locked_sdists, project_artifacts, require_built
    from lockdock.installer import store as store_mod
    from lockdock.progress import say

    target = store or store_mod.default_store(ctx.project_dir.resolve())
    artifacts = project_artifacts(ctx.project_dir, flavors, platforms)
    if check:
        count = store_mod.require_complete(artifacts, target)
        require_built(artifacts, target)
        say(f"store {target}: all {count} artifact(s) present")
        return
    report = store_mod.fetch(artifacts, target, jobs=jobs)
    if sdists := build_locked_sdists(artifacts, target):
        say(f"store {target}: {sdists} pip sdist(s) built into wheels (once, reproducibly)")
    say(
        f"store {target}: {len(report.downloaded)} downloaded, "
        f"{len(report.already_present)} already present"
        + (f", {len(report.replaced_corrupt)} corrupt replaced" if report.replaced_corrupt else "")
    )


@cli.command()
@click.argument("lockfile", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--prefix", type=click.Path(), callback=_non_empty_path, required=True)
@click.option("--platform", default=None, callback=_non_empty,
              help="Conda subdir (default: this machine).")
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Artifact store (default: <project>/.lockdock/store).",
)
@click.option("--offline", is_flag=True, help="Never download; fail listing what is missing.")
@click.option(
    "--category", "categories", multiple=True, help="Lock category (repeatable; default: main)."
)
@click.option("--verify-only", is_flag=True, help="Only check that the prefix equals the lock.")
@click.option("--jobs", type=_JOBS, default=4, show_default=True,
              help="Parallel downloads/hashes.")
@click.option("--force", is_flag=True, help="Install into an existing conda prefix lockdock "
              "did not create (its packages not in the lock are removed).")
@pass_ctx
def install(
    ctx: _Context,
    lockfile: Path,
    prefix: Path,
    platform: str | None,
    store: Path | None,
    offline: bool,
    categories: tuple[str, ...],
    verify_only: bool,
    jobs: int,
    force: bool,
) -> None:
    """Install LOCKFILE into PREFIX from the store, then verify PREFIX equals the lock."""
    from lockdock.installer import install as install_mod
    from lockdock.installer import prefix as prefix_mod
    from lockdock.installer.store import default_store

    chosen = list(categories) or ["main"]
    if verify_only:
        prefix_mod.verify_prefix(lockfile, prefix, platform, chosen)
        click.echo(f"{prefix} matches {lockfile}", err=True)
        return
    install_mod.install(
        lockfile,
        prefix,
        platform=platform,
        categories=chosen,
        store=store or default_store(ctx.project_dir.resolve()),
        offline=offline,
        jobs=jobs,
        force=force,
    )


# --- build / verify-repro (store -> image) -------------------------------------------

_PLATFORM = click.Choice(DOCKER_PLATFORMS)


def _ready(ctx: _Context, flavor: str, platform: str | None, builder: str | None) \
        -> FlavorContext:
    """The flavor resolved once, refused if its lock no longer matches its inputs (`lock
    --check` on the lock just read), then the engine."""
    from lockdock.image.build import ready_to_build
    from lockdock.lock import require_fresh_locks

    def fresh(context: FlavorContext) -> None:
        require_fresh_locks(context.project, [flavor], locks={flavor: context.lock})

    return ready_to_build(ctx.project_dir, flavor, platform, builder, fresh)


@cli.command()
@click.argument("flavor")
@click.option("--platform", type=_PLATFORM, default=None,
              help="Docker platform (default: this machine's).")
@click.option("--base-image", default=None, metavar="REF",
              help="Base image (default: images/base/Dockerfile's BASE_IMAGE, pinned by digest).")
@click.option("--builder", default=None, help="buildx builder (remote, Kubernetes...).")
@click.option("--name", default=None, help="Image name (default: lockdock/FLAVOR).")
@click.option("--force", is_flag=True, help="Rebuild even when the content-addressed tag exists.")
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip",
              show_default=True, help="Layer compression (gzip level 6, zstd level 3).")
@click.option("--cache-from", multiple=True, metavar="REF|type=...",
              help="BuildKit cache to import: registry REF, type=gha or type=local,src=DIR.")
@click.option("--cache-to", multiple=True, metavar="REF|type=...",
              help="BuildKit cache to export (registry REF: mode=max); not the docker driver.")
@pass_ctx
def build(ctx: _Context, flavor: str, platform: str | None, base_image: str | None,
          builder: str | None, name: str | None, force: bool, compression: str,
          cache_from: tuple[str, ...], cache_to: tuple[str, ...]) -> None:
    """Build FLAVOR's image from the fetched store with BuildKit, no network, reproducibly.

    Tags NAME:FLAVOR-<lock sha256[:12]> (content-addressed), a descriptive and NAME:latest;
    does nothing when the content-addressed tag exists (unless --force). Prints the digest.
    """
    from lockdock.image.build import build_command

    build_command(_ready(ctx, flavor, platform, builder), base_image=base_image,
                  builder=builder, name=name, force=force, compression=compression,
                  cache_from=cache_from, cache_to=cache_to)


@cli.command("verify-repro")
@click.argument("flavor")
@click.option("--platform", type=_PLATFORM, default=None,
              help="Docker platform (default: this machine's).")
@click.option("--base-image", default=None, metavar="REF", help="Base image (as for build).")
@click.option("--builder", default=None, help="buildx builder.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep both OCI layouts in this folder.")
@pass_ctx
def verify_repro(ctx: _Context, flavor: str, platform: str | None, base_image: str | None,
                 builder: str | None, keep: Path | None) -> None:
    """Build FLAVOR twice with --no-cache; exit 12 if they, or the recorded build, differ."""
    from lockdock.image.repro import verify_repro as run_twice

    run_twice(_ready(ctx, flavor, platform, builder), base_image=base_image,
                         builder=builder, keep=keep)


@cli.command("inspect")
@click.argument("flavor")
@click.option("--platform", type=_PLATFORM, default=None,
              help="Docker platform (default: this machine's).")
@click.option("--against", default=None, metavar="REF",
              help="A previously built or published image: which layers it shares, bytes to pull.")
@pass_ctx
def inspect_image(ctx: _Context, flavor: str, platform: str | None, against: str | None) -> None:
    """Per layer of FLAVOR's last build: its packages, installed and compressed size."""
    from lockdock.inspect import inspect_command

    click.echo(inspect_command(ctx.project_dir, flavor, platform=platform, against=against),
               nl=False)


# --- test (image -> gate report) -----------------------------------------------------


@cli.command("test")
@click.argument("flavor")
@click.option(
    "--image",
    "image_ref",
    default=None,
    metavar="REF",
    help="Image to gate (default: the local tag `lockdock build FLAVOR` gives).",
)
@click.option(
    "--payload",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Gate payload folder (default: the project's tests/image, else lockdock's).",
)
@click.option(
    "--gpu/--no-gpu",
    default=None,
    help="Pass the host's GPUs in (default: when nvidia-smi is present).",
)
@pass_ctx
def test_image(
    ctx: _Context, flavor: str, image_ref: str | None, payload: Path | None, gpu: bool | None
) -> None:
    """Run the gates inside FLAVOR's image; write .lockdock/reports/FLAVOR/DIGEST/."""
    from lockdock.gates import gate_flavor

    gate_flavor(ctx.project_dir, flavor, image_ref=image_ref, payload=payload, gpu=gpu)


# --- publish / pin / devcontainer / sbom (report -> registry -> projects) -----------


@cli.command()
@click.argument("flavor")
@click.option("--registry", "repository", required=True, metavar="REGISTRY/NAME",
              help="Repository to push to, e.g. ghcr.io/org/lockdock or 127.0.0.1:5000/demo.")
@click.option("--image", "images", multiple=True, metavar="REF",
              help="Local image to publish (one per platform; default: the flavor's build).")
@click.option("--platform-only", is_flag=True,
              help="Push each image under <content tag>-<arch> only (one CI runner per "
              "platform); no moving tag, nothing recorded.")
@click.option("--merge", is_flag=True,
              help="Index the per-platform images --platform-only pushed, then push the "
              "tags and record them (gate reports of every platform must be here).")
@pass_ctx
def publish(ctx: _Context, flavor: str, repository: str, images: tuple[str, ...],
            platform_only: bool, merge: bool) -> None:
    """Push a gated image: content-addressed tag, descriptive tag, then moving tags."""
    from lockdock import publish as publishing

    if platform_only and merge:
        raise click.UsageError("--platform-only and --merge exclude each other.")
    mode = "platform" if platform_only else "merge" if merge else "all"
    publishing.publish_flavor(ctx.project_dir, flavor, repository, images, mode)


@cli.command()
@click.argument("reference", metavar="REF")
@click.option("--file", "files", multiple=True, type=click.Path(path_type=Path),
              help="File to pin (repeatable). Default: Dockerfile*, "
              ".devcontainer/devcontainer.json and compose files under the project.")
@click.option("--check", is_flag=True, help="Write nothing; fail if a reference is not pinned "
              "to the tag's current digest.")
@pass_ctx
def pin(ctx: _Context, reference: str, files: tuple[Path, ...], check: bool) -> None:
    """Rewrite references to REF (repo or repo:tag) as repo:tag@sha256:..."""
    from lockdock import pin as pinning
    from lockdock.pin_files import default_files

    paths = list(files) or default_files(ctx.project_dir)
    pinning.pin(reference, paths, check=check, report=click.echo)


@cli.command()
@click.argument("flavor")
@click.option("--repository", default=None, help="Which published repository (when several).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write (default: .devcontainer/devcontainer.json).")
@click.option("--force", is_flag=True, help="Replace an existing, different file.")
@pass_ctx
def devcontainer(ctx: _Context, flavor: str, repository: str | None, output: Path | None,
                 force: bool) -> None:
    """Write a devcontainer.json running FLAVOR's published image, pinned by digest."""
    from lockdock.devcontainer import write_devcontainer

    path = write_devcontainer(ctx.project_dir, flavor, repository=repository, output=output,
                              force=force)
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("flavor")
@click.option("--platform", default=None, callback=_non_empty,
              help="Conda platform (default: this machine's).")
@click.option("--category", "categories", multiple=True, default=("main",), show_default=True,
              help="Lock categories to include (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here instead of standard output.")
@pass_ctx
def sbom(ctx: _Context, flavor: str, platform: str | None, categories: tuple[str, ...],
         output: Path | None) -> None:
    """CycloneDX JSON SBOM of FLAVOR's lock for one platform (validated against the schema)."""
    from lockdock.sbom import sbom_command

    text = sbom_command(ctx.project_dir, flavor, platform, categories, output)
    if text is not None:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {output}", err=True)


@cli.command()
@click.argument("flavor")
@click.option("--kind", type=click.Choice(["explicit", "env"]), default="explicit",
              show_default=True, help="explicit: for `conda create --file`; env: for "
              "micromamba / `conda env create -f`.")
@click.option("--platform", "platforms", multiple=True, callback=_non_empty,
              help="Conda platform to render (repeatable; default: every platform locked).")
@click.option("--dev-dependencies/--no-dev-dependencies", default=True, show_default=True,
              help="Include the `dev` category (as conda-lock render).")
@click.option("--extras", multiple=True, help="Include this category too (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here (one platform) instead of ./conda-<platform>.lock[.yml].")
@pass_ctx
def render(ctx: _Context, flavor: str, kind: str, platforms: tuple[str, ...],
           dev_dependencies: bool, extras: tuple[str, ...], output: Path | None) -> None:
    """Write FLAVOR's lock as the single-platform files `conda-lock render` writes."""
    from lockdock.render import render_command

    for path in render_command(ctx.project_dir, flavor, "env" if kind == "env" else "explicit",
                               platforms, dev=dev_dependencies, extras=extras, output=output):
        click.echo(f"wrote {path}", err=True)


@cli.command("flavors")
@click.option("--json", "as_json", is_flag=True,
              help="Print the flavor names as a JSON list (CI matrices read this).")
@pass_ctx
def flavors_command(ctx: _Context, as_json: bool) -> None:
    """List the project's flavors: name, accelerator, parent, lock (images/*/flavor.toml)."""
    import json

    from lockdock.spec import load_project

    project = load_project(ctx.project_dir)
    if as_json:
        click.echo(json.dumps(sorted(project.flavors)))
        return
    for name in sorted(project.flavors):
        flavor = project.flavors[name]
        parent = f" extends {flavor.parent}" if flavor.parent else ""
        click.echo(f"{name}: {flavor.accelerator}{parent}, "
                   f"lock {flavor.lock_path.relative_to(project.root)}")


def main(argv: list[str] | None = None) -> None:
    run_guarded(cli, argv)


if __name__ == "__main__":
    main()
