"""Unit tests of lockdock.image: Dockerfile rendering, build planning (pure), input checks
(engine, store, base), the OCI comparison of verify-repro."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lockdock import engine
from lockdock.context import resolve_flavor
from lockdock.errors import EngineError, IntegrityError
from lockdock.facts import ENV_PREFIX
from lockdock.image import dockerfile, plan
from lockdock.image.stage import prepare_build
from lockdock.installer.layer_plan import STABLE_EPOCH
from lockdock.installer.lockfile import read_lock
from lockdock.installer.pyc_cache import BUILDER_PYC_CACHE, PYC_CACHE_ARG, PYC_CACHE_OFF
from lockdock.installer.store import inventory, relative_path
from lockdock.spec import load_project
from lockdock.tags import Tags
from lockdock.testing.flavors import write_flavor
from lockdock.testing.installs import Entry, write_lock
from lockdock.workspace import Workspace
from tests.helpers import fake_docker

REPO = Path(__file__).resolve().parents[2]


def test_epoch_is_the_newest_package_in_seconds() -> None:
    stamps = [datetime(2024, 1, 1, tzinfo=UTC), 1_717_000_000_000, None, 1_600_000_000]
    assert plan.source_date_epoch(stamps) == 1_717_000_000
    assert plan.source_date_epoch([None]) == plan.FALLBACK_EPOCH


# --- Dockerfiles -------------------------------------------------------------------------


def test_render_hoists_global_args_before_the_first_from() -> None:
    parts = [
        ("a", "# top\nARG BASE=x\n\nFROM ${BASE} AS one\nRUN true\n"),
        ("b", "ARG LOCK=l.yml\nARG BASE=ignored\nFROM one AS two\nARG LOCK\n"),
    ]
    text = dockerfile.render_dockerfile(parts, "cpu")
    lines = text.splitlines()
    first_from = next(i for i, ln in enumerate(lines) if ln.startswith("FROM"))
    globals_ = [ln for ln in lines[:first_from] if ln.startswith("ARG")]
    assert globals_ == ["ARG BASE=x", "ARG LOCK=l.yml"]
    assert "ARG BASE=ignored" not in text
    assert "# top" in text and text.index("FROM one AS two") > text.index("RUN true")


def test_top_level_dockerfile_is_the_default_flavors_rendering() -> None:
    project = load_project(REPO)
    (default,) = [f for f in project.flavors.values() if f.is_default]
    parts = dockerfile.dockerfile_parts(REPO, default)
    expected = dockerfile.render_dockerfile(parts, default.name)
    assert (REPO / "Dockerfile").read_text(encoding="utf-8") == expected, (
        "Dockerfile is stale: run `nox -s dockerfile`"
    )


def test_no_dockerfile_pulls_a_frontend() -> None:
    files = [REPO / "Dockerfile", *sorted((REPO / "images").rglob("*Dockerfile"))]
    assert len(files) >= 5
    for path in files:
        assert not re.search(r"^#\s*syntax\s*=", path.read_text(), re.MULTILINE | re.IGNORECASE)


def test_builder_installs_offline_from_the_store_mount() -> None:
    stages = (REPO / dockerfile.STAGES_DOCKERFILE).read_text()
    builder = stages[stages.index("AS builder"):]
    assert "RUN --network=none" in builder
    assert "--mount=type=bind,from=store,target=/store" in builder
    install = (REPO / "images/base/build/install-env").read_text()
    assert "--offline" in install and "--store /store" in install
    cuda = (REPO / "images/cuda/Dockerfile").read_text()
    for env in ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
                "CUBLAS_WORKSPACE_CONFIG=:4096:8"):
        assert env in cuda


def test_default_base_is_pinned_by_digest_and_a_missing_one_is_refused() -> None:
    default = dockerfile.default_base_image((REPO / dockerfile.BASE_DOCKERFILE).read_text())
    assert default is not None
    assert re.fullmatch(r"continuumio/miniconda3:[\w.-]+@sha256:[0-9a-f]{64}", default)
    assert dockerfile.base_image_problem(default) is None
    assert "--base-image" in (dockerfile.base_image_problem(None) or "")


def test_buildx_argv(tmp_path: Path) -> None:
    build = plan.BuildPlan(
        project_root=tmp_path, flavor="cpu", platform="linux/amd64", conda_platform="linux-64",
        lock_path=Path("conda-lock.yml"), lock_sha256="0" * 64, epoch=1704067200,
        base_image="base:1", name="n", tags=Tags("cpu-0", (), ("latest",)),
        labels={"io.lockdock.flavor": "cpu"}, dockerfile=tmp_path / "cpu.Dockerfile",
        store_context=tmp_path / "store", installer_context=tmp_path / "inst",
        sbom_context=tmp_path / "sbom", builder="remote",
    )  # fmt: skip
    argv = plan.buildx_argv(build, output=plan.oci_output(tmp_path / "o", rewrite_timestamps=True),
                             metadata_file=tmp_path / "m.json", no_cache=True)
    joined = " ".join(argv)
    assert argv[:3] == ["docker", "buildx", "build"]
    assert "--builder remote" in joined and "--no-cache" in argv
    # --no-cache keeps the pyc cache (a later build reuses the layers); verify-repro's
    # compile_all turns it off
    assert not any(arg.startswith(f"{PYC_CACHE_ARG}=") for arg in argv)
    repro_argv = plan.buildx_argv(build, output="type=cacheonly", metadata_file=tmp_path / "m",
                                  no_cache=True, compile_all=True)
    assert repro_argv[repro_argv.index(f"{PYC_CACHE_ARG}={PYC_CACHE_OFF}") - 1] == "--build-arg"
    assert f"store={tmp_path / 'store'}" in argv and f"installer={tmp_path / 'inst'}" in argv
    assert f"sbom={tmp_path / 'sbom'}" in argv
    assert "SOURCE_DATE_EPOCH=1704067200" in argv and "BASE_IMAGE=base:1" in argv
    assert "--provenance=false" in argv and "rewrite-timestamp=true" in joined
    assert "io.lockdock.flavor=cpu" in argv and argv[-1] == str(tmp_path)
    # another builder's image store is not the engine's: a tarball for docker load
    assert build.loads_tarball and not build.rewrite_timestamps
    local = dataclasses.replace(build, builder=None)
    assert not local.loads_tarball  # the engine's own exporter, no tarball
    assert plan.image_output("n", rewrite_timestamps=False, tarball=False) == (
        "type=image,name=n,oci-mediatypes=true")
    assert dataclasses.replace(local, flavor_layers=("RUN x",)).loads_tarball


def test_only_a_flavor_that_adds_layers_pays_for_the_timestamp_rewrite() -> None:
    text = (
        "# a comment: RUN nothing\nFROM environment AS cpu\nENV A=1 \\\n    B=2\n"
        "LABEL x=y\nUSER lockdock\n"
    )
    assert dockerfile.layer_instructions(text) == []
    added = text + ("RUN apt-get update \\\n  && apt-get install -y vim\n"
                    "copy motd /etc/\nWORKDIR /w\n")
    assert dockerfile.layer_instructions(added) == [
        "RUN apt-get update && apt-get install -y vim", "copy motd /etc/", "WORKDIR /w"]
    # a heredoc's body is the RUN's, not instructions of its own
    heredoc = text + "RUN <<EOT\nWORKDIR /not-an-instruction\nEOT\n"
    assert dockerfile.layer_instructions(heredoc) == ["RUN <<EOT"]
    assert "rewrite-timestamp" not in plan.image_output("n", rewrite_timestamps=False)
    assert plan.image_output("n", rewrite_timestamps=True).endswith(",rewrite-timestamp=true")
    # the repository's flavors add no layers: their builds skip the rewrite
    for flavor in load_project(REPO).flavors.values():
        assert dockerfile.layer_instructions(flavor.dockerfile.read_text()) == [], flavor.name


def test_the_shipped_stages_stamp_their_files_instead_of_copying_context_times() -> None:
    """images/base ships no COPY from the build context (it keeps checkout times) and only
    COPY --link of the trees lockdock stamps (layer slots, lock, SBOM)."""
    base = (REPO / "images/base/Dockerfile").read_text()
    stage = base[base.index(" AS lockdock-base"):]
    assert not [line for line in dockerfile.layer_instructions(stage)
                if line.upper().startswith(("COPY", "ADD"))]  # fmt: skip
    assert '-newerct "@${started}"' in stage
    assert 'touch --no-dereference --date="@${epoch}" "$path"' in stage
    # A fixed time, the splitter's folder time, not the lock's SOURCE_DATE_EPOCH: a relock
    # that moves it leaves the base layer (and every layer's chain above it) as it was.
    base_stage = stage[:stage.index("\nFROM ")] if "\nFROM " in stage else stage
    assert f"export SOURCE_DATE_EPOCH={STABLE_EPOCH};" in base_stage
    assert 'epoch="$SOURCE_DATE_EPOCH"' in base_stage
    assert "ARG SOURCE_DATE_EPOCH" not in base_stage
    stages = (REPO / "images/base/stages.Dockerfile").read_text()
    environment = stages[stages.index(" AS environment"):]
    copies = dockerfile.layer_instructions(environment)
    assert copies and all(line.startswith("COPY --link --from=") for line in copies), copies


# --- store completeness ------------------------------------------------------------------


def _hand_lock(tmp_path: Path) -> Path:
    files = []
    for name in ("hello-1.0-0.conda", "other-2.0-0.conda"):
        path = tmp_path / "pkgs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        files.append(path)
    entries = [Entry(p, f"https://c/noarch/{p.name}", "conda", p.name.split("-")[0],
                     p.name.split("-")[1]) for p in files]
    return write_lock(tmp_path / "conda-lock.yml", entries)


def test_incomplete_store_names_every_missing_artifact(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "images" / "cpu").mkdir(parents=True)
    write_flavor(project / "images", "cpu")
    (project / "environment.yml").write_text("dependencies: []\n")
    lock = _hand_lock(project)
    one = next(a for a in read_lock(lock).artifacts if a.name == "hello")
    stored = Workspace(project).store / "sha256" / (one.sha256 or "") / one.filename
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"hello-1.0-0.conda")
    context = resolve_flavor(project, "cpu", "linux/amd64")
    with pytest.raises(IntegrityError) as caught:
        prepare_build(context, base_image="b:1")
    assert not Workspace(project).build_dir.exists()  # refused before staging anything
    message = str(caught.value)
    assert "other 2.0 (other-2.0-0.conda)" in message and "hello" not in message
    assert "lockdock fetch" in message


def test_the_builder_mounts_the_pyc_cache_and_install_env_can_turn_it_off() -> None:
    stages = (REPO / "images/base/stages.Dockerfile").read_text()
    install_env = (REPO / "images/base/build/install-env").read_text()
    assert f"--mount=type=cache,id=lockdock-pyc,target={BUILDER_PYC_CACHE} " in stages
    # The prefix is kept per architecture and lock path; builds of one lock take turns on it.
    assert ("--mount=type=cache,id=lockdock-prefix-${TARGETARCH}-${LOCK},"
            f"target={ENV_PREFIX},sharing=locked ") in stages
    assert f"prefix={ENV_PREFIX}\n" in install_env
    assert 'if [ -z "$pyc_cache" ]; then empty_prefix; fi' in install_env  # PYC_CACHE=off
    assert f"ARG {PYC_CACHE_ARG}\n" in stages
    assert f"pyc_cache={BUILDER_PYC_CACHE}\n" in install_env
    assert f'if [ "${{{PYC_CACHE_ARG}:-}}" = {PYC_CACHE_OFF} ]; then pyc_cache=; fi' in install_env
    assert '${pyc_cache:+--pyc-cache "$pyc_cache"}' in install_env


def test_a_flavors_solo_layer_mib_reaches_the_splitter_as_a_build_argument(
    tmp_path: Path,
) -> None:
    from lockdock.installer.layer_plan import SOLO_LAYER_ARG

    project = tmp_path / "proj"
    write_flavor(project / "images", "cpu", 'accelerator = "cpu"\ndefault = true\n'
                 "solo-layer-mib = 64\n")
    (project / "environment.yml").write_text("dependencies: []\n")
    _hand_lock(project)
    context = resolve_flavor(project, "cpu", "linux/amd64")
    present = {relative_path(artifact) for artifact in context.artifacts}
    built = plan.plan_build(context, store=tmp_path / "store", present=present, timestamps=[],
                            git=(None, None), native=context.platform, work=tmp_path,
                            base_image="b:1")  # fmt: skip
    argv = plan.buildx_argv(built, output="type=cacheonly", metadata_file=tmp_path / "m")
    assert argv[argv.index(f"{SOLO_LAYER_ARG}=64") - 1] == "--build-arg"
    # the builder stage declares the argument and install-env hands it to the splitter
    assert f"ARG {SOLO_LAYER_ARG}\n" in (REPO / "images/base/stages.Dockerfile").read_text()
    install_env = (REPO / "images/base/build/install-env").read_text()
    assert f'${{{SOLO_LAYER_ARG}:+--solo-min-mib "${SOLO_LAYER_ARG}"}}' in install_env


def test_a_locked_sdist_without_its_built_wheel_is_refused_before_staging(
    tmp_path: Path,
) -> None:
    """The image's installer builds nothing: an sdist whose wheel `fetch` never built (or
    whose wheel file is gone) is exit 7 at plan time, not a failure inside BuildKit."""
    import hashlib as _hashlib

    from lockdock.installer.built import BuiltWheel, unbuilt_sdists

    project = tmp_path / "proj"
    write_flavor(project / "images", "cpu")
    (project / "environment.yml").write_text("dependencies: []\n")
    sdist = project / "pkgs" / "midiutil-1.2.1.tar.gz"
    sdist.parent.mkdir(parents=True)
    sdist.write_bytes(b"an sdist")
    write_lock(project / "conda-lock.yml", [Entry(
        sdist, "https://files.example/midiutil-1.2.1.tar.gz", "pip", "midiutil", "1.2.1")])
    context = resolve_flavor(project, "cpu", "linux/amd64")
    store = Workspace(project).store
    (artifact,) = context.artifacts
    stored = store / relative_path(artifact)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"an sdist")
    with pytest.raises(IntegrityError) as caught:
        prepare_build(context, base_image="b:1")
    assert "midiutil 1.2.1 (midiutil-1.2.1.tar.gz)" in str(caught.value)
    assert "lockdock fetch cpu" in str(caught.value) and caught.value.exit_code == 7
    assert not Workspace(project).build_dir.exists()  # nothing staged
    # a record whose wheel file is gone is just as unbuilt; with the wheel it is not
    wheel_bytes = b"a wheel"
    built = BuiltWheel(artifact, "midiutil-1.2.1-py3-none-any.whl",
                       _hashlib.sha256(wheel_bytes).hexdigest(), {})
    record = store / "built" / f"{artifact.sha256}.json"
    record.parent.mkdir(parents=True)
    record.write_text(built.to_json())
    assert unbuilt_sdists(context.artifacts, store, inventory(store)) == [artifact]
    wheel = store / relative_path(built.artifact)
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(wheel_bytes)
    assert unbuilt_sdists(context.artifacts, store, inventory(store)) == []


# --- engine checks (faults injected with a fake docker on PATH) ---------------------------


def test_no_docker_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError, match="not installed") as caught:
        engine.check_engine()
    assert "ci/engine start" in str(caught.value)


def test_engine_not_answering(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", fake_docker(tmp_path, "echo 'Cannot connect' >&2; exit 1\n"))
    with pytest.raises(EngineError, match="does not answer"):
        engine.check_engine()


def test_buildx_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = 'if [ "$1" = buildx ]; then echo "unknown command" >&2; exit 1; fi\necho 26.1.5\n'
    monkeypatch.setenv("PATH", fake_docker(tmp_path, script))
    with pytest.raises(EngineError, match="buildx plugin is missing") as caught:
        engine.check_engine()
    assert "docker-buildx" in str(caught.value)


def test_cli_refuses_an_unknown_flavor_and_a_stale_lock_whatever_the_engine_state(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The project's mistakes are named before the engine is asked: with an engine that does
    not answer, the unknown flavor and the stale lock still get their own exit codes."""
    from lockdock.cli import main

    monkeypatch.setenv("PATH", fake_docker(tmp_path, "echo 'Cannot connect' >&2; exit 1\n"))
    project = tmp_path / "proj"
    (project / "images" / "cpu").mkdir(parents=True)
    write_flavor(project / "images", "cpu")
    (project / "environment.yml").write_text(
        "channels: [conda-forge]\nplatforms: [linux-64]\ndependencies: [python]\n"
    )
    with pytest.raises(SystemExit) as unknown:
        main(["-C", str(project), "build", "gpu"])
    assert unknown.value.code == 2
    assert "Unknown flavor 'gpu'" in capsys.readouterr().err
    _hand_lock(project)  # a lock whose content hash is not this environment.yml's
    with pytest.raises(SystemExit) as stale:
        main(["-C", str(project), "build", "cpu"])
    assert stale.value.code == 6
    assert "Stale lock" in capsys.readouterr().err


# --- lab: never without a token ----------------------------------------------------------


def _run_lab(tmp_path: Path, *args: str, jupyter: bool = True,
             token: str | None = None) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    if jupyter:
        stub = bin_dir / "jupyter-lab"
        stub.write_text('#!/bin/sh\necho "ARGS $*"\necho "ENVTOKEN $JUPYTER_TOKEN"\n')
        stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CONDA_PREFIX": "/env"}
    if token is not None:
        env["JUPYTER_TOKEN"] = token
    return subprocess.run(["bash", str(REPO / "images/base/rootfs/bin/lab"), *args],
                          capture_output=True, text=True, env=env, check=False)


def test_lab_generates_a_token_and_prints_the_url(tmp_path: Path) -> None:
    proc = _run_lab(tmp_path)
    assert proc.returncode == 0, proc.stderr
    token = re.search(r"token=([0-9a-f]+)", proc.stderr)
    assert token and len(token.group(1)) == 48
    assert f"--IdentityProvider.token={token.group(1)}" in proc.stdout
    assert "--ip=0.0.0.0 --port=8888" in proc.stdout
    assert f"ENVTOKEN {token.group(1)}" in proc.stdout
    again = _run_lab(tmp_path)
    assert token.group(1) not in again.stderr  # fresh each run


def test_lab_uses_the_given_token_and_refuses_an_empty_one(tmp_path: Path) -> None:
    given = _run_lab(tmp_path, token="s3cret")
    assert "token=s3cret" in given.stderr and "--IdentityProvider.token=s3cret" in given.stdout
    refused = _run_lab(tmp_path, "--IdentityProvider.token=")
    assert refused.returncode == 2 and "never run JupyterLab without a token" in refused.stderr
    assert "ARGS" not in refused.stdout
    missing = _run_lab(tmp_path / "without-jupyter", jupyter=False)
    assert missing.returncode == 127 and "jupyterlab" in missing.stderr


def test_ci_engine_is_executable_and_needs_root() -> None:
    script = REPO / "ci" / "engine"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert "need_root" in text and "containerd-snapshotter" in text
    usage = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "start|stop|status" in usage.stderr


def test_every_path_the_dockerfiles_read_is_tracked_by_git() -> None:
    """A fresh clone must hold what the build reads (an ignore rule once hid build/)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "images"],
                            capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = set(listed.stdout.split())
    text = "\n".join((REPO / p).read_text() for p in
                     (dockerfile.BASE_DOCKERFILE, dockerfile.STAGES_DOCKERFILE))
    read = set(re.findall(r"(?:source=|COPY (?:--chmod=\S+ )?)(images/\S+?)/?[\s,]", text))
    assert "images/base/build" in read and "images/base/rootfs" in read
    for path in read:
        assert any(t == path or t.startswith(path.rstrip("/") + "/") for t in tracked), path


def _stage_chain(text: str) -> list[str]:
    """The instructions of the stages the last stage of ``text`` is built on, itself included."""
    stages: dict[str, tuple[str, list[str]]] = {}
    last = ""
    for line in dockerfile.instructions(text):
        if line.upper().startswith("FROM "):
            words = line.split()
            last = words[3] if len(words) >= 4 and words[2].upper() == "AS" else f"#{len(stages)}"
            stages[last] = (words[1], [])
        elif last:
            stages[last][1].append(line)
    chain, name = [], last
    while name in stages:
        parent, lines = stages[name]
        chain += lines
        name = parent
    return chain


@pytest.mark.parametrize("flavor", sorted(load_project(REPO).flavors))
def test_no_build_argument_is_declared_in_the_stages_an_image_is_made_of(flavor: str) -> None:
    """Newer Dockerfile frontends write each ARG inside a stage into the image history: one
    there would make the digest depend on the builder's BuildKit version (base.name is a
    ``lockdock build --label`` instead)."""
    project = load_project(REPO)
    text = dockerfile.render_dockerfile(dockerfile.dockerfile_parts(REPO, project.flavors[flavor]),
                                        flavor)  # fmt: skip
    chain = _stage_chain(text)
    assert any(line.startswith("COPY --link --from=builder") for line in chain), chain[:5]
    assert [line for line in chain if line.upper().startswith("ARG")] == []
