"""Layers that follow the lock, on the real engine: a one-package relock changes that package's
bucket and the shared slot (plus the lock and SBOM files' layers) only, a second flavor shares the
solo layers, a push after the first uploads only the changed layers, and the split image's
environment is byte for byte the verified install.

The demo project without torch (the packaged CPython is the one large, solo package), flavors
``cpu`` and ``second`` (extends cpu, adds one small package). Every lockdock step runs as the
CLI. Images and build records are removed afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lockdock.context import resolve_flavor
from lockdock.image.build import build as build_image
from lockdock.image.plan import buildx_argv, oci_output
from lockdock.image.repro import blob_path, platform_manifests
from lockdock.image.stage import prepare_build
from lockdock.installer.layer_plan import (
    FIRST_BUCKET_SLOT,
    REPORT_PATH,
    SHARED_SLOT,
    bucket_of,
    slot_dir,
)
from lockdock.testing import BUILD_TIMESTAMP, ChannelServer, FakePackage, build_channel
from lockdock.testing.cpython import packaging_problem
from lockdock.testing.demo import (
    CHANNEL_NAME,
    build_demo_channel,
    environment_yml,
    mirror_option,
    write_demo_project,
)
from lockdock.testing.flavors import write_flavor
from lockdock.workspace import Workspace
from tests.helpers import docker, installer_for_image, remove_tags, tags_of
from tests.helpers import lockdock_process as lockdock
from tests.helpers import succeeded as ok

pytestmark = [pytest.mark.engine]

NAME = "lockdock-test/layers"
REGISTRY = "127.0.0.1:5000"
#: hello 1.1 is built a month after everything else, as a relock's newer conda-forge build
#: would be: the relock moves the lock's SOURCE_DATE_EPOCH.
HELLO_NEXT_TIMESTAMP = BUILD_TIMESTAMP + 30 * 86400
EXTRA_PACKAGES = (
    FakePackage("hello", "1.1", build="0", files={"share/hello/version": "1.1\n"},
                timestamp=HELLO_NEXT_TIMESTAMP),
    FakePackage("extra", "1.0", build="0", files={"share/extra/readme": "extra\n"}),
)
SECOND_FLAVOR = 'accelerator = "cpu"\nextends = "cpu"\nmoving-tags = ["second"]\n'
#: 40 more packages and a threshold of 0 MiB: every package wants a solo slot, 39 exist.
CROWD = tuple(FakePackage(f"crowd{i:02d}", "1.0", build="0",
                          files={f"share/crowd{i:02d}/x": f"{i}\n"}) for i in range(40))
CROWDED_FLAVOR = 'accelerator = "cpu"\nextends = "cpu"\nsolo-layer-mib = 0\n'








@dataclass(frozen=True)
class Image:
    tag: str
    layers: tuple[str, ...]  # diff IDs, in order
    report: dict[str, Any]  # the split report shipped in the image
    created: str  # the config's `created`: the lock's SOURCE_DATE_EPOCH

    def slot_layers(self) -> dict[str, str]:
        """Slot -> diff ID of its layer: slots are the 56 layers before the last two (the
        lock file and the SBOM)."""
        slots = [s["slot"] for s in self.report["slots"]]
        return dict(zip(slots, self.layers[-2 - len(slots):-2], strict=True))

    def slot_of(self, key: str) -> str:
        manager, name = key.split(":", 1)
        for entry in self.report["slots"]:
            if any((p["manager"], p["name"]) == (manager, name) for p in entry["packages"]):
                return str(entry["slot"])
        raise AssertionError(f"{key} is in no slot of {self.tag}")


def image(tag: str) -> Image:
    inspected = json.loads(ok(docker("image", "inspect", tag)).stdout)[0]
    shipped = ok(docker("run", "--rm", tag, "cat", f"/{REPORT_PATH}")).stdout
    return Image(tag, tuple(inspected["RootFS"]["Layers"]), json.loads(shipped),
                 inspected["Created"])


@dataclass(frozen=True)
class Built:
    root: Path
    old: Image  # cpu, hello 1.0
    new: Image  # cpu, hello 1.1 (relocked)
    second: Image  # second flavor = cpu (hello 1.0) + extra
    base_image: str
    crowded: subprocess.CompletedProcess[str]  # `lockdock build crowded`: over the budget
    new_log: str  # the build log of `new`


def _build(root: Path, flavor: str, base: str) -> tuple[str, str]:
    """(reference, build log) of ``lockdock build FLAVOR``."""
    ok(lockdock(root, "fetch", flavor))
    proc = ok(lockdock(root, "build", flavor, "--base-image", base, "--name", f"{NAME}-{flavor}"))
    record = next((Workspace(root).builds_dir / flavor).glob("*.json"))
    return str(json.loads(record.read_text())["reference"]), proc.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Built]:
    problem = packaging_problem()
    if problem:
        pytest.skip(f"cannot package this CPython for the demo channel: {problem}")
    served = tmp_path_factory.mktemp("layers-served")
    channel = build_demo_channel(served)
    build_channel(channel, (*EXTRA_PACKAGES, *CROWD))
    root = tmp_path_factory.mktemp("layers") / "project"
    with ChannelServer(served) as server:
        mirror = mirror_option(f"{server.url}/{CHANNEL_NAME}")
        write_demo_project(root, pip=(), conda=("hello 1.0.*", "tinylib"))
        write_flavor(root / "images", "second", SECOND_FLAVOR,
                     (root / "images/cpu/Dockerfile").read_text().replace(" AS cpu", " AS second"))
        (root / "images/second/environment.yml").write_text("dependencies:\n  - extra\n")
        write_flavor(root / "images", "crowded", CROWDED_FLAVOR,
                     (root / "images/cpu/Dockerfile").read_text().replace(" AS cpu", " AS crowded"))
        (root / "images/crowded/environment.yml").write_text(
            "dependencies:\n" + "".join(f"  - {p.name}\n" for p in CROWD))
        try:
            ok(lockdock(root, "lock", *mirror))
            old = image(_build(root, "cpu", base_image)[0])
            second = image(_build(root, "second", base_image)[0])
            ok(lockdock(root, "fetch", "crowded"))
            crowded = lockdock(root, "build", "crowded", "--base-image", base_image,
                               "--name", f"{NAME}-crowded")
            (root / "environment.yml").write_text(
                environment_yml(pip=(), conda=("hello 1.1.*", "tinylib")))
            ok(lockdock(root, "lock", "cpu", *mirror))
            new_reference, new_log = _build(root, "cpu", base_image)
            yield Built(root, old, image(new_reference), second, base_image, crowded, new_log)
        finally:
            for flavor in ("cpu", "second", "crowded"):
                remove_tags(f"{NAME}-{flavor}")
                remove_tags(f"{REGISTRY}/{NAME}-{flavor}")


def test_one_package_relock_changes_only_its_bucket_and_the_shared_slot(built: Built) -> None:
    old, new = built.old.slot_layers(), built.new.slot_layers()
    changed = {slot for slot in old if old[slot] != new[slot]}
    hello = slot_dir(bucket_of("conda:hello"))
    assert built.new.slot_of("conda:hello") == hello
    assert changed == {slot_dir(SHARED_SLOT), hello}
    # hello 1.1's newer build moved SOURCE_DATE_EPOCH, yet the base stage's layers are the
    # same: every layer's chain below hello's bucket is unchanged, so a client that has the
    # old image extracts only from that bucket up.
    assert built.old.created.startswith("2024-01-01") and built.new.created.startswith("2024-01-31")
    base = len(built.old.layers) - 2 - len(old)
    assert built.old.layers[:base] == built.new.layers[:base]  # the base stage is shared
    assert built.old.layers[-2:] != built.new.layers[-2:]  # the lock file and its SBOM


def test_a_second_flavor_shares_every_solo_layer(built: Built) -> None:
    cpu, second = built.old.slot_layers(), built.second.slot_layers()
    python = built.old.slot_of("conda:python")
    assert int(python) < FIRST_BUCKET_SLOT and built.second.slot_of("conda:python") == python
    solo = [e for e in built.old.report["slots"]
            if int(e["slot"]) < FIRST_BUCKET_SLOT and e["packages"]]  # fmt: skip
    assert solo and all(cpu[e["slot"]] == second[e["slot"]] for e in solo)
    differing = {slot for slot in cpu if cpu[slot] != second[slot]}
    assert differing == {slot_dir(SHARED_SLOT), slot_dir(bucket_of("conda:extra"))}
    shared = sum(int(e["installed_bytes"]) for e in built.old.report["slots"]
                 if cpu[e["slot"]] == second[e["slot"]])  # fmt: skip
    print(f"cpu and second share {shared} installed bytes of layers")


def test_more_packages_than_solo_slots_fail_the_build_with_exit_10_and_no_tag(
    built: Built,
) -> None:
    proc = built.crowded
    assert proc.returncode == 10, proc.stderr[-3000:]
    assert "Layer budget exceeded" in proc.stderr and "solo-layer-mib = 1" in proc.stderr
    assert re.search(r"conda:crowd\d\d \(0\.0 MiB\)", proc.stderr), proc.stderr[-3000:]
    assert tags_of(f"{NAME}-crowded") == []  # neither the content-addressed nor a temporary
    assert not (Workspace(built.root).builds_dir / "crowded").exists()


def _push(local: str, remote: str) -> list[str]:
    ok(docker("tag", local, remote))
    return ok(docker("push", remote)).stdout.splitlines()


def test_pushing_after_a_relock_uploads_only_the_changed_layers(built: Built) -> None:
    remote = f"{REGISTRY}/{NAME}-cpu"
    _push(built.old.tag, f"{remote}:old")
    lines = _push(built.new.tag, f"{remote}:new")
    pushed = [line for line in lines if line.endswith(": Pushed")]
    reused = [line for line in lines if line.endswith(": Layer already exists")]
    distinct_new = len(set(built.new.layers) - set(built.old.layers))
    assert len(pushed) == distinct_new == 4, lines  # shared slot, hello's bucket, lock, SBOM
    assert reused, lines



def test_the_split_environment_is_the_verified_install(built: Built, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    verifier = installer_for_image(built.root, tmp_path / "verifier")
    command = (
        "python -m lockdock.installer.install /usr/share/lockdock/conda-lock.yml"
        " --prefix /opt/conda/envs/lockdock --platform linux-64 --verify-only"
        " && python -m lockdock.installer.layers --manifest-of /opt/conda/envs/lockdock"
    )
    for built_image in (built.old, built.new, built.second):
        proc = docker("run", "--rm", "--user", "root", "-v", f"{verifier}:/verify:ro",
                      "-e", "PYTHONPATH=/verify/src:/verify/deps",
                      "-e", "PYTHONDONTWRITEBYTECODE=1", built_image.tag, "bash", "-c", command)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split()[-1] == built_image.report["prefix_manifest_sha256"]


#: The access log of the registry ``ci/engine`` runs (its REGISTRY log under LOGS).
REGISTRY_LOG = Path("/var/log/lockdock-engine/registry.log")


def _manifest_layers(reference: str) -> list[str]:
    raw = json.loads(ok(docker("buildx", "imagetools", "inspect", "--raw", reference)).stdout)
    return [layer["digest"] for layer in raw["layers"]]


def test_pulling_the_update_fetches_only_the_changed_layers(built: Built) -> None:
    """``docker pull`` (containerd store) prints no per-layer lines: the registry's access
    log says which blobs the pull fetched."""
    assert REGISTRY_LOG.is_file(), f"{REGISTRY_LOG}: the registry of ci/engine logs there"
    remote = f"{NAME}-cpu"
    _push(built.old.tag, f"{REGISTRY}/{remote}:old")
    _push(built.new.tag, f"{REGISTRY}/{remote}:new")
    changed = set(_manifest_layers(f"{REGISTRY}/{remote}:new")) - set(
        _manifest_layers(f"{REGISTRY}/{remote}:old"))
    assert len(changed) == 4  # shared slot, hello's bucket, the lock file, the SBOM
    # A machine that has the first image only: remove the second (every name it has).
    image_id = ok(docker("image", "inspect", "--format", "{{.Id}}", built.new.tag)).stdout
    ok(docker("image", "rm", "--force", image_id.strip()))
    start = REGISTRY_LOG.stat().st_size
    ok(docker("pull", f"{REGISTRY}/{remote}:new"))
    with REGISTRY_LOG.open(encoding="utf-8", errors="replace") as log:
        log.seek(start)
        fetched = set(re.findall(rf'"GET /v2/{re.escape(remote)}/blobs/(sha256:[0-9a-f]{{64}})',
                                 log.read()))
    layers = set(_manifest_layers(f"{REGISTRY}/{remote}:new"))
    # Only changed layers are fetched. Not necessarily all of them: this daemon's BuildKit
    # cache shares the containerd content store and may still hold some of their blobs
    # (a machine that pulled the first image only would fetch all four).
    assert fetched & layers <= changed, (sorted(fetched), sorted(changed))
    print(f"pull after the relock fetched {len(fetched & layers)} of {len(layers)} layers "
          f"({len(changed)} changed)")
    ok(docker("tag", f"{REGISTRY}/{remote}:new", built.new.tag))


def test_inspect_and_the_relock_body_state_the_bytes_to_pull(built: Built) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ci"))
    import relock_report

    text = ok(lockdock(built.root, "inspect", "cpu", "--against", built.old.tag)).stdout
    assert f"Against {built.old.tag}: 4 layer(s) to pull" in text, text
    assert "unknown" not in text  # the local image's compressed sizes come from docker save
    assert "| 00 | python 3.11.7 |" in text
    body = "\n".join(relock_report.layer_section(built.old.tag, built.new.tag))
    assert "4 layer(s) to pull" in body


def test_another_checkout_at_another_time_builds_the_same_layers(
    built: Built, tmp_path: Path
) -> None:
    """The image's bytes do not depend on the checkout's file times nor the build's: a copy of
    the project whose every file is a day newer, built with no cache, has the same layers (no
    layer of the shipped stages takes a time from the context or the clock)."""
    copy = tmp_path / "checkout"
    shutil.copytree(built.root, copy, symlinks=True)
    later = time.time() + 86400
    for path in copy.rglob("*"):
        os.utime(path, (later, later), follow_symlinks=False)
    name = f"{NAME}-checkout"
    try:
        context = resolve_flavor(copy, "cpu")
        plan = prepare_build(context, base_image=built.base_image)
        assert not plan.rewrite_timestamps  # so the rewrite is not what makes them equal
        result = build_image(context, base_image=built.base_image, name=name, force=True,
                             no_cache=True)  # every step run anew, at another time
        assert image(result.reference).layers == built.new.layers
    finally:
        remove_tags(name)


def test_the_image_depends_on_the_compression_not_on_what_the_cache_held(built: Built) -> None:
    """A gzip build after a zstd build of the same lock is the gzip image again (BuildKit
    reused the cache's zstd blobs before lockdock set force-compression)."""
    gzip_digest = ok(docker("image", "inspect", "--format", "{{.Id}}", built.new.tag)).stdout
    name = f"{NAME}-compression"
    common = ("build", "cpu", "--base-image", built.base_image, "--name", name, "--force")
    try:
        zstd = ok(lockdock(built.root, *common, "--compression", "zstd"))
        again = ok(lockdock(built.root, *common))
    finally:
        remove_tags(name)
    assert zstd.stdout.split()[-1] != gzip_digest.strip()
    assert again.stdout.split()[-1] == gzip_digest.strip()


def test_an_unreachable_cache_from_is_a_warning_not_a_failure(built: Built) -> None:
    name = f"{NAME}-cachefrom"
    try:
        proc = lockdock(built.root, "build", "cpu", "--base-image", built.base_image,
                        "--name", name, "--force",
                        "--cache-from", "127.0.0.1:9/lockdock-nothing:cache")  # discard port
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "127.0.0.1:9/lockdock-nothing:cache" in proc.stderr  # BuildKit says it failed
        assert tags_of(name), "the image was built and tagged"
    finally:
        remove_tags(name)


def test_verify_repro_passes_on_the_split_image(built: Built) -> None:
    """Two fresh builds agree, and they are the image the last `lockdock build` recorded,
    which used the builder's kept prefix and pyc cache."""
    proc = ok(lockdock(built.root, "verify-repro", "cpu", "--base-image", built.base_image))
    assert "identical" in proc.stderr
    record = Workspace(built.root).read_build_record("cpu", "linux/amd64")
    assert record is not None and record.compression == "gzip"
    assert f"the recorded build {record.reference} is that image" in proc.stderr, proc.stderr


def test_a_relock_installs_into_the_kept_prefix_and_gives_a_fresh_installs_layers(
    built: Built, tmp_path: Path
) -> None:
    """The builder's prefix is a cache mount kept from the last build: the relocked build
    brought it to the new lock instead of installing everything, and its layers are those of
    an install into an empty prefix (PYC_CACHE=off, as verify-repro builds)."""
    assert "holds an earlier build's install: bringing it to this lock" in built.new_log
    plan = prepare_build(resolve_flavor(built.root, "cpu"), base_image=built.base_image)
    layout = tmp_path / "fresh"
    argv = buildx_argv(plan, output=oci_output(layout, rewrite_timestamps=plan.rewrite_timestamps),
                       metadata_file=tmp_path / "metadata.json", no_cache=True, compile_all=True)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "holds an earlier build's install" not in proc.stderr
    manifest = json.loads(blob_path(layout, platform_manifests(layout)["linux/amd64"]).read_text())
    config = json.loads(blob_path(layout, manifest["config"]["digest"]).read_text())
    assert tuple(config["rootfs"]["diff_ids"]) == built.new.layers
