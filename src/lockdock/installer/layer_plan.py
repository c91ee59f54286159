"""Which image layer each file of a verified prefix goes to: the pure half of the splitter.

The final stage of every flavor copies a fixed number of layer *slots*
(``COPY --link --from=builder /layers/NN/ /`` for NN in ``00..SLOTS-1``), so the Dockerfiles
never change when the lock does; the splitter (``lockdock.installer.layers``) fills them.

The rule (documented in the README, "Layers"):

- every file and symlink of the prefix belongs to one *owner*: the conda package whose
  ``conda-meta/<name>-<version>-<build>.json`` lists it (the record file itself belongs to
  its package), or the pip distribution whose ``RECORD`` lists it (only distributions pip
  installed: a ``.dist-info`` a conda package ships is that package's);
- a byte-compiled ``__pycache__/<module>.<tag>.pyc`` no list names goes with the owner of
  ``<module>.py`` (it is compiled from it, for the prefix's Python);
- a path a pip ``RECORD`` and conda lists both name goes to the pip distribution (pip ran
  after the conda part, so the bytes on disk are the wheel's); a path several conda lists or
  several RECORDs name goes to the shared slot (its bytes depend on all of them).
  rattler itself renames a conda-on-conda clobber to ``__clobbers__/<package>/<path>`` and
  lists the renamed path, so those have one owner like any other file;
- ``UNOWNED_FILES`` (``conda-meta/history``, ``conda-meta/.lockdock-prefix``, rattler's
  ``CACHEDIR.TAG``, the PEP 668 ``lib/python3.*/EXTERNALLY-MANAGED``) and directories no
  owned file lies under go to the shared slot; any other file no owner claims is an error (exit 10);
- an owner of at least ``SOLO_MIN_BYTES`` installed bytes gets a slot of its own (its layer's
  bytes depend on that package build only); the others share ``BUCKETS`` buckets, chosen by
  the sha256 of the owner's key (``conda:<name>`` / ``pip:<name>``, not its version), so a
  relock that bumps one small package changes that package's bucket and the shared slot only;
- an owner of more than ``PART_BYTES`` gets ``part_count`` consecutive solo slots, its
  *parts* (``plan_parts``: largest file first, each to the part holding the fewest bytes so
  far): BuildKit compresses the layers of an image in parallel, registries take and clients
  fetch several at once, and one large layer is one serial stream (the torch demo's gzip
  export: 23.5 s with its 721 MiB in one layer, 17.2 s in two; README "Layers"). The parts
  depend on the owner's own files alone, so each part is as byte-stable as a solo slot;
- when the large owners need more slots than there are solo slots, the build fails (exit 10)
  naming the owners that do not fit and the threshold at which they would: merging a large
  package into a bucket silently would tie its bytes to its neighbours' versions, the very
  thing the split is for. The threshold is the flavor's ``solo-layer-mib`` (flavor.toml),
  passed to the builder as the build argument ``SOLO_LAYER_ARG``.

Timestamps: a file gets its conda package's build timestamp; pip distributions, the shared slot and
every directory get ``STABLE_EPOCH``; each is clamped to the image's ``SOURCE_DATE_EPOCH``.
None of them depends on the rest of the lock, the flavor, the date or the git commit.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lockdock.errors import BuildError
from lockdock.installer.prefix import CONDA_META, PREFIX_MARKER

#: Layer slots of the final stage (images/<flavor>/Dockerfile copies /layers/00 .. 55), in
#: layer order: what changes least comes first. A client (and ``docker load``) re-extracts
#: every layer above the first one that changed (containerd keys an unpacked layer by its
#: chain, i.e. by every layer below it), so the large solo layers come first, then the
#: buckets, then the shared slot that every relock changes.
SLOTS = 56
#: Buckets for the owners below the threshold.
BUCKETS = 16
#: Solo slots 00 .. SOLO_SLOTS-1, buckets SOLO_SLOTS .. SLOTS-2, the shared slot last.
SOLO_SLOTS = SLOTS - BUCKETS - 1
FIRST_SOLO_SLOT = 0
FIRST_BUCKET_SLOT = SOLO_SLOTS
#: Slot of what no single package owns (UNOWNED_FILES, shared paths, empty directories) and
#: of the split report.
SHARED_SLOT = SLOTS - 1
MIB = 1024 * 1024
#: Installed size from which an owner gets a solo slot (32 MiB: in a torch image that is
#: torch, python, numpy and the large native libraries; everything else is buckets).
SOLO_MIN_BYTES = 32 * MIB
#: An owner of more installed bytes than this is split over several solo slots, its parts.
PART_BYTES = 512 * MIB
#: At most this many parts per owner (a 2 GB CUDA library: 4 layers of about 512 MiB).
MAX_PARTS = 4
#: The builder stage's build argument for a flavor's own threshold in MiB (flavor.toml
#: ``solo-layer-mib``; unset: ``SOLO_MIN_BYTES``). images/base/build/install-env reads it.
SOLO_LAYER_ARG = "SOLO_LAYER_MIB"
#: 2000-01-01T00:00:00Z: the time of pip distributions, the shared slot and every directory,
#: and of what the base stage's RUN writes (images/base/Dockerfile; tests/unit/test_image.py).
STABLE_EPOCH = 946684800
#: Files the installer and the builder leave that no package lists (relative to the prefix;
#: ``fnmatch`` patterns): conda's history, lockdock's own-prefix marker, the cache tag rattler
#: writes, and the PEP 668 marker the builder puts beside the stdlib (images/base/build).
UNOWNED_FILES = (f"{CONDA_META}/history", f"{CONDA_META}/{PREFIX_MARKER}", "CACHEDIR.TAG",
                 "lib/python3.*/EXTERNALLY-MANAGED")
#: Where lockdock's own files lie in the image, relative to the root.
SHARE_DIR = "usr/share/lockdock"
#: The split report (in the shared slot; the lock and the SBOM are the two layers after it).
REPORT_PATH = f"{SHARE_DIR}/layers.json"

_PYC = re.compile(r"^(?P<dir>(?:.*/)?)__pycache__/(?P<module>[^/.]+)\.[^/]*\.pyc$")


@dataclass(frozen=True)
class Owner:
    """A conda package or a pip distribution installed in the prefix."""

    manager: str  # "conda" | "pip"
    name: str
    version: str
    build: str = ""
    #: Seconds since the epoch (conda's build timestamp); None for pip.
    timestamp: int | None = None

    @property
    def key(self) -> str:
        return f"{self.manager}:{self.name}"


@dataclass(frozen=True)
class Ownership:
    """Each path's owner key (None: the shared slot), and the paths nobody may own."""

    owner: dict[str, str | None]
    shared: list[str] = field(default_factory=list)
    unowned: list[str] = field(default_factory=list)


def pyc_source(path: str) -> str | None:
    """``pkg/__pycache__/mod.cpython-311.pyc`` -> ``pkg/mod.py``; None for other paths."""
    match = _PYC.match(path)
    return f"{match['dir']}{match['module']}.py" if match else None


def normalise(path: str) -> str | None:
    """A list's path relative to the prefix, posix; None when it leaves the prefix."""
    clean = posixpath.normpath(path.replace("\\", "/"))
    if clean.startswith(("../", "/")) or clean in ("..", "."):
        return None
    return clean


def assign_owners(
    paths: Iterable[str],
    conda: Mapping[str, Iterable[str]],
    pip: Mapping[str, Iterable[str]],
) -> Ownership:
    """Owner of every path (files and symlinks of the prefix, relative posix). Pure.

    ``conda`` / ``pip``: owner key -> the paths its record lists (relative to the prefix).
    """
    claims: dict[str, tuple[set[str], set[str]]] = {}
    for table, index in ((conda, 0), (pip, 1)):
        for key, listed in table.items():
            for raw in listed:
                path = normalise(raw)
                if path is not None:
                    claims.setdefault(path, (set(), set()))[index].add(key)
    result = Ownership(owner={})
    for path in sorted(set(paths)):
        owner, decided = _decide(claims.get(path))
        if not decided:
            source = pyc_source(path)
            owner, decided = _decide(claims.get(source)) if source else (None, False)
        if decided:
            result.owner[path] = owner
            if owner is None:
                result.shared.append(path)
        elif any(fnmatch.fnmatchcase(path, pattern) for pattern in UNOWNED_FILES):
            result.owner[path] = None
        else:
            result.unowned.append(path)
    return result


def _decide(claim: tuple[set[str], set[str]] | None) -> tuple[str | None, bool]:
    """(owner key or None for shared, whether anyone claims the path)."""
    if claim is None:
        return None, False
    conda_keys, pip_keys = claim
    if len(pip_keys) == 1:
        return next(iter(pip_keys)), True
    if not pip_keys and len(conda_keys) == 1:
        return next(iter(conda_keys)), True
    return None, bool(conda_keys or pip_keys)


def bucket_of(key: str) -> int:
    """The bucket slot of an owner below the threshold: stable in its key alone."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return FIRST_BUCKET_SLOT + int.from_bytes(digest[:8], "big") % BUCKETS


def part_count(size: int) -> int:
    """How many solo slots an owner of ``size`` installed bytes takes: 1 up to
    ``PART_BYTES``, then one per ``PART_BYTES`` begun, at most ``MAX_PARTS``."""
    return 1 if size <= PART_BYTES else min(MAX_PARTS, -(-size // PART_BYTES))


def plan_parts(files: Mapping[str, int], parts: int) -> dict[str, int]:
    """Path -> part (0 .. parts-1) of one owner's files (path -> size): the largest file first
    (paths in order among equal sizes), each to the part with the fewest bytes so far (the
    lowest part among equals). Pure, and a function of the owner's own files alone."""
    loads = [0] * parts
    placed: dict[str, int] = {}
    for path in sorted(files, key=lambda p: (-files[p], p)):
        part = min(range(parts), key=lambda i: (loads[i], i))
        placed[path] = part
        loads[part] += files[path]
    return placed


def plan_slots(
    sizes: Mapping[str, int],
    *,
    solo_min_bytes: int = SOLO_MIN_BYTES,
    slots: int = SLOTS,
) -> dict[str, tuple[int, ...]]:
    """Owner key -> its slots. Large owners get solo slots in name order (``part_count``
    consecutive ones each); the rest, one bucket each.

    Large owners needing more slots than there are solo slots: BuildError (exit 10) naming
    those beyond the budget (the smallest of them) and the threshold that fits.
    """
    solo_count = slots - BUCKETS - 1
    if solo_count < 0:
        raise ValueError(f"{slots} slots cannot hold the shared slot and {BUCKETS} buckets")
    large = sorted((k for k, size in sizes.items() if size >= solo_min_bytes),
                   key=lambda k: (-sizes[k], k))  # fmt: skip
    if sum(part_count(sizes[k]) for k in large) > solo_count:
        raise over_budget(large, sizes, solo_count, solo_min_bytes)
    plan: dict[str, tuple[int, ...]] = {}
    next_slot = FIRST_SOLO_SLOT
    for key in sorted(large):
        count = part_count(sizes[key])
        plan[key] = tuple(range(next_slot, next_slot + count))
        next_slot += count
    for key in sizes:
        plan.setdefault(key, (bucket_of(key),))
    return plan


def over_budget(
    large: list[str], sizes: Mapping[str, int], solo_count: int, solo_min_bytes: int
) -> BuildError:
    """The layer-budget error: ``large`` is sorted largest first."""
    needed, fitting = 0, 0
    for key in large:
        needed += part_count(sizes[key])
        if needed > solo_count:
            break
        fitting += 1
    beyond = large[fitting:]
    fits = sizes[large[fitting]] // MIB + 1  # the first size that leaves the fitting owners
    listing = ", ".join(f"{key} ({sizes[key] / MIB:.1f} MiB)" for key in beyond[:20])
    more = f" and {len(beyond) - 20} more" if len(beyond) > 20 else ""
    total = sum(part_count(sizes[key]) for key in large)
    parts = (f" (those over {PART_BYTES // MIB} MiB take up to {MAX_PARTS} each: {total} "
             "slots)" if total != len(large) else "")  # fmt: skip
    return BuildError(
        f"Layer budget exceeded: {len(large)} packages are installed at "
        f"{solo_min_bytes / MIB:g} MiB or more{parts}, but the image has {solo_count} solo "
        f"layer slots; these do not fit: {listing}{more}. Each large package keeps its own "
        "layers so that their bytes stay shared across relocks and flavors, and lockdock does "
        "not merge one into a bucket behind your back. Raise the threshold to "
        f"{fits} MiB or more: `solo-layer-mib = {fits}` in the flavor's flavor.toml (plain "
        f"`docker build`: --build-arg {SOLO_LAYER_ARG}={fits})."
    )


def clamp(timestamp: int | None, source_date_epoch: int | None) -> int:
    """A file's time: its owner's (else ``STABLE_EPOCH``), never after ``SOURCE_DATE_EPOCH``."""
    value = timestamp if timestamp and timestamp > 0 else STABLE_EPOCH
    if value > 100_000_000_000:  # conda's millisecond stamps
        value //= 1000
    if source_date_epoch is not None:
        value = min(value, source_date_epoch)
    return value


def slot_dir(slot: int) -> str:
    """``/layers/<this>/``: two digits, as the Dockerfiles name them."""
    return f"{slot:02d}"


def dockerfile_copy_lines(builder_stage: str = "builder") -> list[str]:
    """The final stage's COPY lines, one per slot (a test binds them to the Dockerfiles)."""
    return [f"COPY --link --from={builder_stage} /layers/{slot_dir(s)}/ /" for s in range(SLOTS)]
