"""Image facts: versions read from a lock through the accelerator classes, and the labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockdock.accelerators import KINDS, Cuda
from lockdock.context import resolve_flavor
from lockdock.facts import (
    ACCELERATOR_LABEL,
    FLAVOR_LABEL,
    LOCK_HASH_LABEL,
    LockVersions,
    descriptor,
    lock_versions,
)
from lockdock.image.plan import plan_labels
from lockdock.installer.lockfile import LockedArtifact
from lockdock.testing.flavors import write_flavor
from lockdock.testing.installs import Entry, write_lock
from tests.helpers import entry


def test_versions_of_a_cpu_pip_torch_have_no_cuda() -> None:
    versions = lock_versions([
        entry("python", "3.11.7"),
        entry("torch", "2.13.0+cpu", "pip"),
        entry("nvidia-cuda-runtime-cu12", "12.8.90", "pip"),  # stray: torch is CPU
    ])  # fmt: skip
    assert versions == LockVersions("3.11.7", "2.13.0+cpu", {})
    assert descriptor(versions, KINDS["cpu"]) == "py3.11-torch2.13"


@pytest.mark.parametrize(
    ("packages", "cuda"),
    [
        ([entry("pytorch", "2.5.1", build="cuda126_py312"), entry("cuda-version", "12.6")],
         "12.6"),
        ([entry("torch", "2.8.0", "pip"), entry("nvidia-cuda-runtime-cu12", "12.8.90", "pip")],
         "12.8"),
        ([entry("torch", "2.8.0+cu129", "pip")], "12.9"),
        ([entry("torch", "2.13.0", "pip"), entry("nvidia-cuda-runtime", "13.0.96", "pip")],
         "13.0"),
    ],
)  # fmt: skip
def test_versions_find_cuda(packages: list[LockedArtifact], cuda: str) -> None:
    assert lock_versions(packages).runtimes == {"cuda": cuda}


def test_rocm_is_found_the_same_way_through_its_own_class() -> None:
    versions = lock_versions([entry("torch", "2.5.1+rocm6.2", "pip")])
    assert versions.runtimes == {"rocm": "6.2"} and versions.runtime(KINDS["rocm"]) == "6.2"
    assert versions.runtime(KINDS["cuda"]) is None


def test_min_driver_exact_then_major_fallback() -> None:
    cuda = Cuda()
    assert cuda.min_driver("12.8") == "570.26"
    assert cuda.min_driver("12.7") == "525.60.13"  # no GA table entry: minor compat
    assert cuda.min_driver("10.2") is None


def _project_with_lock(tmp_path: Path, kind: str) -> Path:
    (tmp_path / "environment.yml").write_text("dependencies: []\n")
    write_flavor(tmp_path / "images", kind, f'accelerator = "{kind}"\ndefault = true\n')
    files = []
    for name in ("python-3.12.1-0.conda", "pytorch-2.8.0-cuda128_0.conda",
                 "cuda-version-12.8-0.conda"):
        path = tmp_path / "pkgs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        files.append(path)
    entries = [Entry(p, f"https://c/linux-64/{p.name}", "conda", p.name.rsplit("-", 2)[0],
                     p.name.rsplit("-", 2)[1]) for p in files]
    write_lock(tmp_path / "conda-lock.yml", entries)
    return tmp_path


def test_labels_from_the_lock(tmp_path: Path) -> None:
    context = resolve_flavor(_project_with_lock(tmp_path, "cuda"), "cuda", "linux/amd64")
    labels = plan_labels(context, epoch=1704067200, version_tag="cuda-ssssssssssss",
                         source="https://example/repo", base_image="base@sha256:" + "b" * 64)
    assert labels[FLAVOR_LABEL] == "cuda" and labels[ACCELERATOR_LABEL] == "cuda"
    assert labels[LOCK_HASH_LABEL] == context.lock.content_hash["linux-64"]
    assert labels["io.lockdock.cuda.version"] == "12.8"
    assert labels["io.lockdock.cuda.min-driver"] == "570.26"
    assert labels["io.lockdock.pytorch.version"] == "2.8.0"
    assert labels["org.opencontainers.image.created"] == "2024-01-01T00:00:00Z"
    assert labels["org.opencontainers.image.base.name"] == "base@sha256:" + "b" * 64
    # the git commit is no build input: not a label (one lock at two commits is one image)
    assert not any(key.endswith(".revision") for key in labels)


def test_two_commits_plan_one_image_and_record_their_revision(tmp_path: Path) -> None:
    """Same lock and store at two git commits: identical labels, so one image digest; the
    commit goes to the plan (then the build record), not into the image."""
    from lockdock.image.plan import BuildPlan, plan_build

    context = resolve_flavor(_project_with_lock(tmp_path, "cuda"), "cuda", "linux/amd64")
    present = {f"sha256/{a.sha256}/{a.filename}" for a in context.artifacts}

    def plan(revision: str, base: str | None = "b:1") -> BuildPlan:
        return plan_build(context, store=tmp_path / "store", present=present,
                          timestamps=[1704067200], git=("https://example/repo", revision),
                          native=context.platform, work=tmp_path / "work", base_image=base,
                          base_default="default:1")  # fmt: skip

    first, second = plan("a" * 40), plan("b" * 40)
    assert first.labels == second.labels
    assert first.labels["org.opencontainers.image.base.name"] == "b:1"
    assert plan("a" * 40, None).labels["org.opencontainers.image.base.name"] == "default:1"
    assert (first.revision, second.revision) == ("a" * 40, "b" * 40)


def test_a_build_with_no_base_image_is_refused_before_any_work(tmp_path: Path) -> None:
    from lockdock.errors import UsageError
    from lockdock.image.plan import plan_build

    context = resolve_flavor(_project_with_lock(tmp_path, "cuda"), "cuda", "linux/amd64")
    present = {f"sha256/{a.sha256}/{a.filename}" for a in context.artifacts}
    with pytest.raises(UsageError, match=r"no default BASE_IMAGE; pass --base-image REF\.$"):
        plan_build(context, store=tmp_path / "store", present=present, timestamps=[1],
                   git=(None, None), native=context.platform, work=tmp_path / "work")
