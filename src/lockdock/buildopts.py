"""BuildKit options of ``lockdock build`` as pure argv/exporter fragments: layer compression and
the build cache (``--cache-from`` / ``--cache-to``).

Compression (``--compression``): BuildKit's exporter option ``compression=`` with an explicit
``compression-level=`` so the bytes do not change when BuildKit's default does. ``gzip`` (the
default; every registry and runtime reads it) at level 6, ``zstd`` at level 3 (BuildKit's
default level; containerd ≥ 1.5 and Docker ≥ 23 pull it). ``force-compression=true``: without
it BuildKit reuses any blob its cache holds for a layer, in whatever format, so a gzip build
after a zstd one gave the zstd image, and the digest of one lock depended on what had been
built before (measured: gzip, zstd, gzip builds gave two digests for one input). With it, a
layer blob already in the chosen format is reused and another is converted once (BuildKit
keeps each format's blob), so the image is a function of the inputs and the compression.

Cache (``--cache-from`` / ``--cache-to``, repeatable): a plain reference is BuildKit's
registry cache (``type=registry,ref=REF``; exported with ``mode=max`` so the builder and
installer stages are cached too, as an OCI image manifest that any OCI registry stores); a
value that starts with ``type=`` is passed through to buildx (``type=gha``, ``type=local``,
``type=registry,...``), after checking its type is one BuildKit knows. BuildKit itself treats
an unreachable ``--cache-from`` as a warning and builds cold. The ``docker`` driver (the
default builder of dockerd) is not used to export a cache: ``--cache-to`` needs a
``docker-container``, ``kubernetes`` or ``remote`` builder (``--builder``), which
``cache_to_problem`` says up front. (dockerd 26 with the containerd store accepts a registry
cache export, but here its "preparing build cache for export" grew dockerd past 9 GiB; README.)
"""

from __future__ import annotations

from collections.abc import Sequence

from lockdock.errors import UsageError

#: ``--compression`` choices -> the level lockdock pins.
COMPRESSION_LEVELS = {"gzip": 6, "zstd": 3}
DEFAULT_COMPRESSION = "gzip"
#: Cache backends BuildKit implements (``docker buildx build --cache-from/--cache-to``).
CACHE_TYPES = ("registry", "local", "gha", "inline", "s3", "azblob")
#: Builder drivers that can export a cache (the ``docker`` driver cannot).
CACHE_EXPORTING_DRIVERS = ("docker-container", "kubernetes", "remote")


def compression_options(compression: str = DEFAULT_COMPRESSION) -> str:
    """The exporter options (``--output`` suffix) for ``compression``; UsageError otherwise."""
    level = COMPRESSION_LEVELS.get(compression)
    if level is None:
        raise UsageError(
            f"--compression {compression!r}: choose one of {', '.join(COMPRESSION_LEVELS)}."
        )
    return f"compression={compression},compression-level={level},force-compression=true"


def with_compression(output: str, compression: str = DEFAULT_COMPRESSION) -> str:
    """``--output`` value ``output`` (``type=docker,...``/``type=oci,...``) with compression."""
    return f"{output},{compression_options(compression)}"


def _cache_spec(value: str, option: str, *, export: bool) -> str:
    value = value.strip()
    if not value:
        raise UsageError(f"{option} needs a value: a registry reference or type=...,...")
    if not value.startswith("type="):
        if "," in value or "=" in value:
            raise UsageError(
                f"{option} {value!r}: give a registry reference (REGISTRY/NAME:TAG) or a "
                "buildx cache spec that starts with type= (type=gha, type=local,src=DIR...)."
            )
        spec = f"type=registry,ref={value}"
        return spec + (",mode=max,image-manifest=true,oci-mediatypes=true" if export else "")
    kind = value.split(",", 1)[0].removeprefix("type=")
    if kind not in CACHE_TYPES:
        raise UsageError(
            f"{option} {value!r}: unknown cache type {kind!r}; BuildKit has "
            f"{', '.join(CACHE_TYPES)}."
        )
    return value


def cache_argv(cache_from: Sequence[str] = (), cache_to: Sequence[str] = ()) -> list[str]:
    """``--cache-from X`` / ``--cache-to Y`` for buildx, each value checked and expanded."""
    argv: list[str] = []
    for value in cache_from:
        argv += ["--cache-from", _cache_spec(value, "--cache-from", export=False)]
    for value in cache_to:
        argv += ["--cache-to", _cache_spec(value, "--cache-to", export=True)]
    return argv


def cache_to_problem(driver: str | None, cache_to: Sequence[str]) -> str | None:
    """Why ``cache_to`` cannot work with a builder of ``driver`` (None: it can)."""
    exports = [v for v in cache_to if not v.strip().startswith("type=inline")]
    if not exports or driver is None or driver in CACHE_EXPORTING_DRIVERS:
        return None
    return (
        f"--cache-to {exports[0]}: the buildx builder uses the {driver!r} driver, which cannot "
        "export a build cache. Create one that can (`docker buildx create --name lockdock "
        "--driver docker-container`, or a remote BuildKit with `--driver remote "
        "tcp://HOST:1234`) and pass --builder NAME"
    )


# --- edge -----------------------------------------------------------------------------------


def builder_driver(builder: str | None) -> str | None:
    """The driver of buildx builder ``builder`` (default: the current one); None if unknown."""
    import subprocess

    argv = ["docker", "buildx", "inspect", *([builder] if builder else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Driver":
            return value.strip() or None
    return None


def check_cache_to(builder: str | None, cache_to: Sequence[str]) -> None:
    """UsageError before any work when ``--cache-to`` cannot be exported by ``builder``."""
    if not cache_to:
        return
    problem = cache_to_problem(builder_driver(builder), cache_to)
    if problem:
        raise UsageError(problem + ".")
