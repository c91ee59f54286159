"""Flavors as data: flavor.toml parsing, chains, inheritance, and every refusal (exit 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockdock.errors import SpecError
from lockdock.spec import load_project
from lockdock.testing.flavors import write_flavor
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]


def project(tmp_path: Path, flavors: dict[str, str], files: dict[str, str] | None = None) -> Path:
    (tmp_path / "environment.yml").write_text("channels: [x]\ndependencies: [python]\n")
    for name, text in flavors.items():
        write_flavor(tmp_path / "images", name, text)
    for relative, text in (files or {}).items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    return tmp_path


def test_the_repository_flavors_are_data(tmp_path: Path) -> None:
    flavors = load_project(REPO).flavors
    assert flavors["cpu"].accelerator == "cpu" and flavors["cpu"].is_default
    assert flavors["cpu"].lock_path == REPO / "conda-lock.yml"
    assert flavors["cpu"].moving_tags == ("cpu", "latest")
    cuda = flavors["cuda"]
    assert (cuda.accelerator, cuda.parent, cuda.moving_tags) == ("cuda", "cpu", ("cuda",))
    assert cuda.environment_files == (REPO / "environment.yml",
                                      REPO / "images/cuda/environment.yml")
    assert cuda.virtual_packages_file == REPO / "images/cuda/virtual-packages.yml"
    assert cuda.lock_path == REPO / "images/cuda/conda-lock.yml"


def test_a_chain_of_three_accumulates_sources_in_order_and_inherits_settings(
    tmp_path: Path,
) -> None:
    root = project(
        tmp_path,
        {
            "core": 'accelerator = "cpu"\nplatforms = ["linux-64"]\nwith-cuda = "12.0"\n',
            "science": 'extends = "core"\nenvironment = ["science.yml"]\n',
            "pytorch": 'extends = "science"\naccelerator = "cuda"\nmoving-tags = ["gpu"]\n',
        },
        {"images/science/science.yml": "dependencies: [numpy]\n",
         "images/pytorch/environment.yml": "dependencies: [pytorch]\n"},
    )
    flavors = load_project(root).flavors
    top = flavors["pytorch"]
    assert top.environment_files == (
        root / "environment.yml", root / "images/science/science.yml",
        root / "images/pytorch/environment.yml",
    )
    assert (top.accelerator, top.platforms, top.with_cuda) == ("cuda", ("linux-64",), "12.0")
    assert flavors["science"].accelerator == "cpu"
    assert top.moving_tags == ("gpu",) and flavors["science"].moving_tags == ("science",)


def test_solo_layer_mib_is_inherited(
    tmp_path: Path,
) -> None:
    root = project(tmp_path, {"core": 'accelerator = "cpu"\nsolo-layer-mib = 64\n',
                              "gpu": 'extends = "core"\n', "plain": 'accelerator = "cpu"\n'})
    flavors = load_project(root).flavors
    assert (flavors["core"].solo_layer_mib, flavors["gpu"].solo_layer_mib) == (64, 64)
    assert flavors["plain"].solo_layer_mib is None


@pytest.mark.parametrize(
    ("flavors", "needle"),
    [
        ({"a": 'accelerator = "tpu"\n'}, r"a/flavor.toml: `accelerator`: unknown accelerator "
                                         r"kind 'tpu'; lockdock knows cpu, cuda, rocm"),
        ({"a": 'accelerator = "cpu"\ncolour = "red"\n'}, r"a/flavor.toml: unknown key 'colour'"),
        ({"a": 'extends = "nope"\n'}, r"a/flavor.toml: `extends = 'nope'` names no flavor"),
        ({"a": 'extends = "b"\naccelerator = "cpu"\n', "b": 'extends = "a"\n'},
         r"`extends` makes a cycle: a -> b -> a"),
        ({"a": 'accelerator = "cpu"\nextends = "a"\n'}, r"`extends` makes a cycle: a -> a"),
        ({"a": 'accelerator = "cpu"\nplatforms = ["linux/riscv64"]\n'},
         r"a/flavor.toml: `platforms`: Unknown platform 'linux/riscv64'"),
        ({"a": 'accelerator = "cpu"\nplatforms = "linux-64"\n'},
         r"`platforms` must be a list of strings"),
        ({"a": 'accelerator = cpu\n'}, r"a/flavor.toml is not valid TOML"),
        ({"a": 'moving-tags = ["a"]\n'}, r"a/flavor.toml: `accelerator` is missing"),
        ({"a": 'accelerator = "cpu"\ndefault = true\n',
          "b": 'accelerator = "cpu"\ndefault = true\n'},
         r"b/flavor.toml: `default = true`, but .*a/flavor.toml says so too"),
        ({"a": 'accelerator = "cpu"\nwith-cuda = "12"\nwithout-cuda = true\n'},
         r"`with-cuda` and `without-cuda` exclude each other"),
        ({"a": 'accelerator = "cpu"\nsolo-layer-mib = -1\n'},
         r"`solo-layer-mib` must be a whole number of 0 or more, not -1"),
        ({"a": 'accelerator = "cpu"\nsolo-layer-mib = true\n'},
         r"`solo-layer-mib` must be a whole number of 0 or more, not True"),
        ({"a": 'accelerator = "cpu"\nsolo-layer-mib = "64"\n'},
         r"`solo-layer-mib` must be a whole number of 0 or more, not '64'"),
        ({"a": 'accelerator = "cpu"\nenvironment = ["missing.yml"]\n'},
         r"`environment` lists missing.yml, which is not a file"),
        ({"a": 'accelerator = "cpu"\nenvironment = ["../../environment.yml"]\n'},
         r"`environment` lists ../../environment.yml which the chain already has"),
    ],
)
def test_bad_flavor_files_are_refused_naming_file_and_key(
    tmp_path: Path, flavors: dict[str, str], needle: str
) -> None:
    root = project(tmp_path, flavors)
    with pytest.raises(SpecError, match=needle):
        load_project(root)


def test_the_cli_answers_a_bad_flavor_file_with_exit_3_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project(tmp_path, {"a": 'accelerator = "cpu"\nextends = "a"\n'})
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert run_cli("lock", "--check", project=root) == 3
    err = capsys.readouterr().err
    assert "a/flavor.toml" in err and "cycle" in err and "Traceback" not in err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_flavor_folder_without_flavor_toml_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path, {})
    (root / "images/x").mkdir(parents=True)
    (root / "images/x/Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(SpecError, match=r"images/x has no flavor.toml"):
        load_project(root)
