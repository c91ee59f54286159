"""SBOM from real-world locks: valid CycloneDX, the lock's purls and hashes, deterministic."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lockdock import cli, sbom
from lockdock.installer.lockfile import read_lock
from lockdock.testing.flavors import write_flavor
from tests.data import BODO, LARSNET, OLD_LAYOUT, PANGEO


def _library_validate(text: str) -> None:
    """cyclonedx-python-lib's own strict validator, unmodified (slow: Earley IRI parser)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert problem is None, problem


def test_larsnet_sbom_validates_with_the_library_validator_and_names_every_artifact() -> None:
    lock = read_lock(LARSNET)
    text = sbom.sbom_json(LARSNET, "linux-64")
    _library_validate(text)
    bom = json.loads(text)
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    artifacts = lock.select("linux-64")
    assert len(bom["components"]) == len(artifacts) == 270
    by_purl = {c["purl"]: c for c in bom["components"]}
    # numpy is locked twice (conda 2.3.3 and pip 2.2.6): two components, two purls.
    conda_numpy = [p for p in by_purl if p.startswith("pkg:conda/numpy@")]
    assert conda_numpy and conda_numpy[0].startswith("pkg:conda/numpy@2.3.3?build=")
    assert "pkg:pypi/numpy@2.2.6" in by_purl
    assert "pkg:pypi/midiutil@1.2.1" in by_purl  # the sdist, name normalized
    for artifact in artifacts:
        component = by_purl[sbom.purl_for(artifact)]
        hashes = {h["alg"]: h["content"] for h in component["hashes"]}
        assert hashes["SHA-256"] == artifact.sha256
        assert hashes.get("MD5") == artifact.md5
        urls = [r["url"] for r in component["externalReferences"] if r["type"] == "distribution"]
        assert urls == [artifact.url]


def test_conda_purl_follows_the_purl_spec() -> None:
    lock = read_lock(LARSNET)
    (torch,) = [a for a in lock.select("linux-64") if a.name == "pytorch"]
    assert sbom.purl_for(torch) == (
        "pkg:conda/pytorch@2.7.1?build=cpu_mkl_py311_h7bde0a3_103&channel=conda-forge"
        "&subdir=linux-64&type=conda"
    )


@pytest.mark.parametrize("platform", ["linux-64", "linux-aarch64", "osx-64", "osx-arm64"])
def test_pangeo_every_platform_validates(platform: str) -> None:
    lock = read_lock(PANGEO)
    bom = json.loads(sbom.sbom_json(PANGEO, platform))
    assert len(bom["components"]) == len(lock.select(platform))
    assert len(bom["dependencies"]) == len(bom["components"]) + 1
    # the root depends on every component; every edge points at a component of this BOM
    refs = {c["bom-ref"] for c in bom["components"]}
    root = bom["dependencies"][0]
    assert root["ref"] == bom["metadata"]["component"]["bom-ref"]
    assert set(root["dependsOn"]) == refs and len(root["dependsOn"]) == len(refs)
    for dependency in bom["dependencies"][1:]:
        assert set(dependency.get("dependsOn", [])) <= refs


def test_bodo_custom_channel_and_dev_category() -> None:
    lock = read_lock(BODO)
    bom = json.loads(sbom.sbom_json(BODO, "linux-64", categories=["main", "dev"]))
    assert len(bom["components"]) == len(lock.select("linux-64", ["main", "dev"]))
    channels = {c["purl"].split("channel=")[1].split("&")[0] for c in bom["components"]}
    assert channels == {"bodo.ai", "conda-forge"}
    main_only = json.loads(sbom.sbom_json(BODO, "linux-64"))
    assert len(main_only["components"]) < len(bom["components"])


def test_old_layout_md5_only_hashes_validate() -> None:
    bom = json.loads(sbom.sbom_json(OLD_LAYOUT, "linux-64", categories=["main", "dev"]))
    algs = {h["alg"] for c in bom["components"] for h in c["hashes"]}
    assert "MD5" in algs


def test_output_is_deterministic_and_serial_derives_from_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = sbom.sbom_json(LARSNET, "linux-64")
    assert first == sbom.sbom_json(LARSNET, "linux-64")
    bom = json.loads(first)
    assert "timestamp" not in bom["metadata"]
    other = json.loads(sbom.sbom_json(LARSNET, "linux-aarch64"))
    assert other["serialNumber"] != bom["serialNumber"]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    stamped = json.loads(sbom.sbom_json(LARSNET, "linux-64"))
    assert stamped["metadata"]["timestamp"].startswith("2023-11-14T22:13:20")
    assert stamped["serialNumber"] == bom["serialNumber"]


def _tiny_lock(tmp_path: Path, url: str, md5: str = "0" * 32) -> Path:
    path = tmp_path / "conda-lock.yml"
    path.write_text(
        f"""version: 1
metadata:
  content_hash: {{linux-64: abc}}
  channels: [{{url: "http://127.0.0.1:8765/channel", used_env_vars: []}}]
  platforms: [linux-64]
  sources: [environment.yml]
package:
- name: tiny
  version: '1.0'
  manager: conda
  platform: linux-64
  dependencies: {{}}
  url: {url}
  hash: {{md5: "{md5}", sha256: "{'a' * 64}"}}
  category: main
  optional: false
""",
        encoding="utf-8",
    )
    return path


def test_local_channel_purl_carries_the_channel_url(tmp_path: Path) -> None:
    lock = _tiny_lock(tmp_path, "http://127.0.0.1:8765/channel/noarch/tiny-1.0-h0_0.conda")
    bom = json.loads(sbom.sbom_json(lock, "linux-64"))
    (component,) = bom["components"]
    assert component["purl"] == (
        "pkg:conda/tiny@1.0?build=h0_0&channel=http://127.0.0.1:8765/channel"
        "&subdir=noarch&type=conda"
    )
    _library_validate(json.dumps(bom))


def test_schema_violations_are_caught(tmp_path: Path) -> None:
    """Injected faults: an MD5 that is not hex; a URL that is no IRI reference."""
    # read_lock itself refuses a non-hex md5 (exit 3), so the fault is injected after reading.
    read = read_lock(_tiny_lock(tmp_path, "http://127.0.0.1:8765/c/noarch/tiny-1.0-h0_0.conda"))
    bad_md5 = dataclasses.replace(
        read, artifacts=tuple(dataclasses.replace(a, md5="zz") for a in read.artifacts))
    with pytest.raises(sbom.SbomError, match=r"does not validate.*hashes"):
        sbom.render(sbom.build_bom(sbom.SbomRequest(bad_md5, "linux-64")))
    # The library percent-encodes what it writes, so corrupt the JSON itself to show that the
    # fast iri-reference check still rejects what the full grammar rejects.
    good = _tiny_lock(tmp_path, "http://127.0.0.1:8765/c/noarch/tiny-1.0-h0_0.conda")
    bom = json.loads(sbom.sbom_json(good, "linux-64"))
    assert not list(sbom._schema_validator().iter_errors(bom))
    bom["components"][0]["externalReferences"][0]["url"] = "http://127.0.0.1:8765/c d/x y"
    errors = list(sbom._schema_validator().iter_errors(bom))
    assert errors and "c d/x y" in errors[0].message and "url" in errors[0].absolute_path


def test_validation_builds_no_iri_grammar_for_ascii_and_still_checks_non_ascii(
    tmp_path: Path,
) -> None:
    """Importing jsonschema as is builds rfc3987-syntax's 38 grammars (about 2 s of every
    build); the SBOM's validation imports it only when a non-ASCII IRI needs the grammar,
    and jsonschema's own checkers still reject what the grammar rejects. A fresh
    interpreter: this one may have imported jsonschema already."""
    lock = _tiny_lock(tmp_path, "http://127.0.0.1:8765/c/noarch/tiny-1.0-h0_0.conda")
    script = f"""
import sys
from lockdock import sbom
sbom.sbom_json({str(lock)!r}, "linux-64")
print("after ascii:", "rfc3987_syntax" in sys.modules)
from jsonschema import Draft7Validator, Draft202012Validator
for validator in (Draft7Validator, Draft202012Validator):
    checker = validator.FORMAT_CHECKER
    print(checker.conforms("http://h/\u00e4", "iri-reference"),
          checker.conforms("http://h/\u00e4 b", "iri-reference"),
          checker.conforms("http://h/\u00e4", "iri"), checker.conforms("rel/\u00e4", "iri"))
print("after non-ascii:", "rfc3987_syntax" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout.splitlines() == [
        "after ascii: False",
        "True False True False",
        "True False True False",
        "after non-ascii: True",
    ], done.stderr


def test_cli_writes_the_sbom_and_rejects_an_unlocked_platform(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "environment.yml").write_text("dependencies: [python]\n", encoding="utf-8")
    (tmp_path / "images" / "cpu").mkdir(parents=True)
    write_flavor(tmp_path / "images", "cpu")
    shutil.copy(LARSNET, tmp_path / "conda-lock.yml")
    out = tmp_path / "out" / "sbom.json"
    with pytest.raises(SystemExit) as done:
        cli.main(["-C", str(tmp_path), "sbom", "cpu", "--platform", "linux-aarch64", "-o",
                  str(out)])
    assert done.value.code == 0
    assert out.read_text(encoding="utf-8") == sbom.sbom_json(
        tmp_path / "conda-lock.yml", "linux-aarch64", name="cpu"
    )
    with pytest.raises(SystemExit) as done:
        cli.main(["-C", str(tmp_path), "sbom", "cpu", "--platform", "win-64"])
    assert done.value.code == 2
    assert "no platform 'win-64'" in capsys.readouterr().err
