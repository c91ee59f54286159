"""lockdock inspect's pure half: rows from the split report and the image's layers, the
table, and what an update pulls."""

from __future__ import annotations

import pytest

from lockdock.errors import UsageError
from lockdock.inspect import ImageLayers, layer_rows, render_table, update_summary
from lockdock.installer.layer_plan import SLOTS, slot_dir


def _report(hello: str = "1.0") -> dict[str, object]:
    slots = [{"slot": slot_dir(s), "packages": [], "installed_bytes": 0} for s in range(SLOTS)]
    slots[0]["installed_bytes"] = 100
    slots[5] = {"slot": "05", "installed_bytes": 2000,
                "packages": [{"manager": "conda", "name": "hello", "version": hello}]}
    slots[17] = {"slot": "17", "installed_bytes": 50_000_000,
                 "packages": [{"manager": "conda", "name": "python", "version": "3.11.7"}]}
    return {"slots": slots}


def _image(tag: str, changed: tuple[int, ...] = (), sizes: bool = False) -> ImageLayers:
    ids = ["sha256:base1", "sha256:base2"]
    ids += [f"sha256:slot{s}{'-' + tag if s in changed else ''}" for s in range(SLOTS)]
    ids += [f"sha256:lock-{tag}", f"sha256:sbom-{tag}"]
    compressed = {d: 10 + i for i, d in enumerate(ids)} if sizes else {}
    return ImageLayers(tag, tuple(ids), compressed)


def test_rows_name_each_slots_packages_and_what_the_other_image_has() -> None:
    new = _image("new", changed=(0, 5), sizes=True)
    rows = layer_rows(_report("1.1"), new, _image("old"))
    by_slot = {r.slot: r for r in rows if r.slot not in ("base", "lock+sbom")}
    assert by_slot["05"].packages == ("hello 1.1",) and by_slot["05"].shared is False
    assert by_slot["17"].shared is True and by_slot["17"].installed_bytes == 50_000_000
    assert [r.shared for r in rows if r.slot == "base"] == [True, True]
    summary = update_summary(rows)
    assert summary.layers == 4  # shared slot, hello's bucket, the lock file, the SBOM
    assert summary.installed_bytes == 2100
    expected = sum(new.compressed[d] for d in new.diff_ids if "new" in d)
    assert summary.compressed_bytes == expected


def test_unknown_compressed_sizes_are_said_not_guessed() -> None:
    rows = layer_rows(_report(), _image("new", changed=(5,)), _image("old"))
    assert update_summary(rows).compressed_bytes is None
    text = "\n".join(render_table(rows, "old"))
    assert "unknown" in text and "| 05 | hello 1.0 |" in text and "**no**" in text
    assert "| 06 |" not in text  # empty slots are left out


def test_an_image_without_the_slots_is_refused() -> None:
    with pytest.raises(UsageError, match="layer slots"):
        layer_rows(_report(), ImageLayers("old", ("sha256:one",), {}))
