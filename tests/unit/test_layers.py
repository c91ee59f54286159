"""The layer plan (pure): who owns a path, which slot an owner gets, file times, and the
Dockerfiles' fixed slots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lockdock.errors import BuildError
from lockdock.facts import ENV_PREFIX
from lockdock.installer.layer_plan import (
    BUCKETS,
    FIRST_BUCKET_SLOT,
    FIRST_SOLO_SLOT,
    MAX_PARTS,
    PART_BYTES,
    SHARED_SLOT,
    SLOTS,
    SOLO_MIN_BYTES,
    SOLO_SLOTS,
    STABLE_EPOCH,
    UNOWNED_FILES,
    assign_owners,
    bucket_of,
    clamp,
    dockerfile_copy_lines,
    part_count,
    plan_parts,
    plan_slots,
    pyc_source,
)

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def test_pyc_source_names_the_module_it_was_compiled_from() -> None:
    assert pyc_source("lib/x/__pycache__/mod.cpython-311.pyc") == "lib/x/mod.py"
    assert pyc_source("__pycache__/top.cpython-311.opt-2.pyc") == "top.py"
    assert pyc_source("lib/x/mod.pyc") is None
    assert pyc_source("lib/x/__pycache__/sub/mod.cpython-311.pyc") is None


def test_each_path_has_its_listed_owner_and_pycs_follow_their_source() -> None:
    ownership = assign_owners(
        ["bin/tool", "lib/a.py", "lib/__pycache__/a.cpython-311.pyc", "conda-meta/history",
         "site/w.py"],
        conda={"conda:tool": ["bin/tool", "./lib/a.py"]},
        pip={"pip:w": ["site/w.py", "../../outside"]},
    )  # fmt: skip
    assert ownership.owner == {
        "bin/tool": "conda:tool",
        "lib/a.py": "conda:tool",
        "lib/__pycache__/a.cpython-311.pyc": "conda:tool",
        "conda-meta/history": None,
        "site/w.py": "pip:w",
    }
    assert ownership.unowned == [] and ownership.shared == []


def test_pip_wins_over_conda_and_double_claims_go_to_the_shared_slot() -> None:
    ownership = assign_owners(
        ["over.py", "both-conda", "both-pip"],
        conda={"conda:a": ["over.py", "both-conda"], "conda:b": ["both-conda"]},
        pip={"pip:w": ["over.py", "both-pip"], "pip:v": ["both-pip"]},
    )
    assert ownership.owner == {"over.py": "pip:w", "both-conda": None, "both-pip": None}
    assert ownership.shared == ["both-conda", "both-pip"]


def test_files_nobody_owns_are_listed_unless_they_are_known_leftovers() -> None:
    ownership = assign_owners([*UNOWNED_FILES, "share/stray", "x/__pycache__/y.cpython-311.pyc"],
                              conda={}, pip={})  # fmt: skip
    assert ownership.unowned == ["share/stray", "x/__pycache__/y.cpython-311.pyc"]
    assert all(ownership.owner[p] is None for p in UNOWNED_FILES)
    marker = assign_owners(["lib/python3.12/EXTERNALLY-MANAGED", "lib/EXTERNALLY-MANAGED"],
                           conda={}, pip={})  # fmt: skip
    assert marker.owner == {"lib/python3.12/EXTERNALLY-MANAGED": None}
    assert marker.unowned == ["lib/EXTERNALLY-MANAGED"]


def test_buckets_depend_on_the_key_alone_and_spread() -> None:
    keys = [f"conda:pkg{i}" for i in range(400)]
    buckets = {bucket_of(k) for k in keys}
    assert buckets == set(range(FIRST_BUCKET_SLOT, FIRST_BUCKET_SLOT + BUCKETS))
    assert SHARED_SLOT == SLOTS - 1 == FIRST_BUCKET_SLOT + BUCKETS  # the shared slot is last
    small = {k: 1000 for k in keys[:50]}
    bumped = {**small, keys[7]: 5000}  # a new version of one package: another size
    assert plan_slots(small) == plan_slots(bumped)


def test_large_owners_get_solo_slots_in_name_order() -> None:
    sizes = {"pip:torch": 900 * MIB, "conda:python": 100 * MIB, "conda:hello": 10,
             "conda:edge": SOLO_MIN_BYTES, "conda:below": SOLO_MIN_BYTES - 1}  # fmt: skip
    plan = plan_slots(sizes)
    assert plan["conda:edge"] == (FIRST_SOLO_SLOT,)
    assert plan["conda:python"] == (FIRST_SOLO_SLOT + 1,)
    assert plan["pip:torch"] == (FIRST_SOLO_SLOT + 2, FIRST_SOLO_SLOT + 3)  # 900 MiB: 2 parts
    assert plan["conda:hello"] == (bucket_of("conda:hello"),)
    assert plan["conda:below"] == (bucket_of("conda:below"),)
    used = [slot for slots in plan.values() for slot in slots]
    assert max(used) < SLOTS and SHARED_SLOT not in used


def test_owners_over_part_bytes_take_one_slot_per_part_begun_at_most_max_parts() -> None:
    assert [part_count(n) for n in (SOLO_MIN_BYTES, PART_BYTES, PART_BYTES + 1,
                                    2 * PART_BYTES, 2 * PART_BYTES + 1, 100 * PART_BYTES)] == [
        1, 1, 2, 2, 3, MAX_PARTS]  # fmt: skip
    sizes = {"conda:cuda": 5 * PART_BYTES, "conda:a": 40 * MIB, "pip:torch": 2 * PART_BYTES}
    plan = plan_slots(sizes)
    assert plan["conda:a"] == (0,) and plan["conda:cuda"] == (1, 2, 3, 4)
    assert plan["pip:torch"] == (5, 6)


def test_parts_balance_bytes_largest_first_and_depend_on_the_owners_files_alone() -> None:
    files = {"lib/libtorch_cpu.so": 434 * MIB, "lib/libc10.so": 90 * MIB,
             "lib/libgomp.so": 60 * MIB, "a.py": 10, "b.py": 10, "c.py": 30}  # fmt: skip
    parts = plan_parts(files, 2)
    assert parts["lib/libtorch_cpu.so"] == 0
    assert {p for p, part in parts.items() if part == 1} >= {"lib/libc10.so", "lib/libgomp.so"}
    assert parts["c.py"] == 1 and parts["a.py"] == 1 and parts["b.py"] == 1
    assert plan_parts(dict(reversed(files.items())), 2) == parts  # not the listing order
    assert set(plan_parts(files, 4).values()) == {0, 1, 2, 3}
    assert plan_parts({"x": 5, "y": 5}, 2) == {"x": 0, "y": 1}  # equal sizes: path order


def test_parts_count_against_the_solo_budget() -> None:
    sizes = {f"conda:big{i:02d}": 3 * PART_BYTES for i in range(SOLO_SLOTS // 3)}
    assert plan_slots(sizes)  # 3 parts each: exactly the budget or less
    sizes["conda:big99"] = 3 * PART_BYTES + MIB
    with pytest.raises(BuildError) as caught:
        plan_slots(sizes)
    message = str(caught.value)
    assert caught.value.exit_code == 10 and "take up to 4 each" in message
    assert "conda:big12 (" in message and "conda:big99" not in message.split("fit:")[1]


def test_more_large_owners_than_solo_slots_fail_naming_those_beyond_and_what_fits() -> None:
    solo = SOLO_SLOTS
    sizes = {f"conda:big{i:03d}": (100 + i) * MIB + MIB // 2 for i in range(solo + 5)}
    sizes["conda:small"] = MIB
    with pytest.raises(BuildError) as caught:
        plan_slots(sizes)
    message = str(caught.value)
    assert caught.value.exit_code == 10
    assert f"{solo + 5} packages are installed at 32 MiB or more" in message
    assert f"{solo} solo layer slots" in message
    beyond = [f"conda:big{i:03d}" for i in range(5)]  # the five smallest
    assert all(f"{key} (" in message for key in beyond)
    assert "conda:big005" not in message and "conda:small" not in message
    # 104.5 MiB is the largest that does not fit: from 105 MiB on, exactly `solo` qualify
    assert "`solo-layer-mib = 105`" in message and "SOLO_LAYER_MIB=105" in message
    plan = plan_slots(sizes, solo_min_bytes=105 * MIB)
    assert sorted(k for k, s in plan.items() if s[0] < FIRST_BUCKET_SLOT) == sorted(
        f"conda:big{i:03d}" for i in range(5, solo + 5))
    used = [slot for slots in plan.values() for slot in slots]
    assert max(used) < SHARED_SLOT and len(set(used)) <= SOLO_SLOTS + BUCKETS
    with pytest.raises(ValueError):
        plan_slots(sizes, slots=FIRST_SOLO_SLOT - 1)


def test_clamp_uses_the_owners_time_never_after_source_date_epoch() -> None:
    assert clamp(1704067200000, None) == 1704067200  # conda's milliseconds
    assert clamp(1704067200, 1704067300) == 1704067200
    assert clamp(1704067200, 1000) == 1000
    assert clamp(None, None) == STABLE_EPOCH
    assert clamp(0, 2_000_000_000) == STABLE_EPOCH


def _final_stage_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("COPY --link --from=builder")]


FLAVOR_DOCKERFILES = sorted(p for p in ROOT.glob("images/*/Dockerfile")
                            if p.parent.name != "base")


def _stage(text: str, name: str) -> str:
    """The lines of stage ``name`` (from its FROM to the next FROM)."""
    start = re.search(rf"^FROM \S+ AS {name}$", text, flags=re.MULTILINE)
    assert start, f"no stage {name}"
    rest = text[start.end():]
    following = re.search(r"^FROM ", rest, flags=re.MULTILINE)
    return rest[: following.start()] if following else rest


def test_the_environment_stage_copies_the_fixed_slots_once() -> None:
    """One home for the slot lines: the shared `environment` stage; plain `docker build .`
    (the top-level Dockerfile) gets them from the same text."""
    stages = (ROOT / "images/base/stages.Dockerfile").read_text(encoding="utf-8")
    assert _final_stage_lines(_stage(stages, "environment")) == dockerfile_copy_lines()
    top = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert _final_stage_lines(top) == dockerfile_copy_lines()
    assert "/layers/" not in (ROOT / "images/base/Dockerfile").read_text(encoding="utf-8")
    for text in (stages, top):
        assert "COPY --from=builder /opt/conda" not in text  # no whole-environment layer


@pytest.mark.parametrize("dockerfile", FLAVOR_DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_flavor_starts_from_the_environment_within_the_layer_budget(
    dockerfile: Path,
) -> None:
    text = dockerfile.read_text(encoding="utf-8")
    assert re.search(rf"^FROM environment AS {dockerfile.parent.name}$", text, re.MULTILINE)
    assert "/layers/" not in text  # the slots are the environment stage's, not repeated
    stages = (ROOT / "images/base/stages.Dockerfile").read_text(encoding="utf-8")
    steps = _stage(stages, "environment") + _stage(text, dockerfile.parent.name)
    assert len(re.findall(r"^(?:COPY|ADD|RUN)\b", steps, flags=re.MULTILINE)) <= 64


def test_the_builder_splits_into_the_slots_the_final_stage_copies() -> None:
    script = (ROOT / "images/base/build/install-env").read_text(encoding="utf-8")
    assert f"prefix={ENV_PREFIX}\n" in script
    assert '-m lockdock.installer.layers --prefix "$prefix" --out /layers' in script
