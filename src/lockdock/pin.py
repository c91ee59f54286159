"""Pin a project's image references to digests: Dockerfiles, devcontainer.json, compose files.

Finding references (``lockdock.pin_files``) and planning the rewrite are pure (text in, spans
and replacements out); the registry lookup is passed in as a function, and writing is one
atomic replace per file (``apply``). Only the reference's characters change: comments,
quoting, indentation and everything else in the file stay byte for byte.

A reference matches a target ``repo`` when it names the same repository (``debian`` and
``docker.io/library/debian`` are the same); a target ``repo:tag`` also requires that tag. A
reference to the target that cannot be rewritten in place (``REPO:$TAG``, continued inside
the reference, a folded YAML scalar) is never passed over: ``pin`` warns, ``--check`` fails.
A malformed digest (``REPO:1@sha256:abc``) is not a pin: ``pin`` replaces it, ``--check``
fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lockdock.errors import PinError, UsageError
from lockdock.fsutil import write_texts_atomic
from lockdock.pin_files import Reference, references_in
from lockdock.registry import ImageRef, parse_reference
from lockdock.textio import read_text


@dataclass(frozen=True)
class Rewrite:
    reference: Reference
    new_text: str


@dataclass
class PinPlan:
    """What ``pin`` would do: rewrites per file, findings for ``--check``, notes."""

    target: ImageRef
    rewrites: dict[Path, list[Rewrite]] = field(default_factory=dict)
    already_pinned: list[Reference] = field(default_factory=list)
    unpinned: list[tuple[Reference, str]] = field(default_factory=list)  # (ref, digest)
    outdated: list[tuple[Reference, str]] = field(default_factory=list)
    invalid: list[tuple[Reference, str]] = field(default_factory=list)  # malformed digest
    unpinnable: list[Reference] = field(default_factory=list)  # to the target, not in place
    notes: list[str] = field(default_factory=list)
    files_without_match: list[Path] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return (len(self.already_pinned) + len(self.unpinned) + len(self.outdated)
                + len(self.invalid))


_UNPINNABLE_HINT = ("A reference lockdock cannot pin must be written as one literal "
                    "REPO:TAG on one line, or pinned by hand (a variable's value).")

# --- planning (pure: the registry is a function passed in) ----------------------------


def matches(reference: ImageRef, target: ImageRef) -> bool:
    if reference.key != target.key:
        return False
    if target.tag is None:
        return True
    return (reference.tag or ("latest" if reference.digest is None else None)) == target.tag


def _names_target(reference: Reference, target: ImageRef) -> bool:
    """Whether ``reference`` is (or, unparseable, may be) a reference to ``target``."""
    if reference.ref is not None:
        return matches(reference.ref, target)
    suspect = reference.suspect
    if suspect is None or suspect.key != target.key:
        return False
    if reference.bad_digest:
        return matches(suspect, target)
    return target.tag is None or suspect.tag in (None, target.tag)  # None: tag unknown


def plan_pin(
    target: ImageRef,
    files: dict[Path, str],
    resolve: Callable[[ImageRef], str],
) -> PinPlan:
    """Decide every rewrite. ``resolve(ref)`` gives the digest ``ref``'s tag points at now.

    Raises PinError when no file references the target (naming the files read), or when
    every reference to it is one lockdock cannot pin.
    """
    plan = PinPlan(target=target)
    digests: dict[tuple[str, str, str], str] = {}
    for path, text in files.items():
        references = references_in(path, text)
        hits = [r for r in references if _names_target(r, target)]
        plan.notes.extend(r.note for r in references
                          if r.note and r.ref is None and r not in hits)
        if not hits:
            plan.files_without_match.append(path)
            continue
        for reference in hits:
            names = reference.ref or reference.suspect
            assert names is not None
            if reference.ref is None and not reference.bad_digest:
                plan.unpinnable.append(reference)
                continue
            if names.tag is None and names.digest is not None:
                plan.notes.append(
                    f"{reference.where}: {reference.text} is pinned by digest with no tag; "
                    "lockdock cannot tell which tag it follows, left alone."
                )
                continue
            tagged = names.with_tag(names.tag or "latest")
            key = (*tagged.key, tagged.tag or "latest")
            if key not in digests:
                digests[key] = resolve(tagged)
            digest = digests[key]
            if names.digest == digest:
                plan.already_pinned.append(reference)
                continue
            if not reference.in_place:
                plan.unpinnable.append(reference)
                continue
            kind = (plan.invalid if reference.ref is None
                    else plan.unpinned if names.digest is None else plan.outdated)
            kind.append((reference, digest))
            plan.rewrites.setdefault(path, []).append(Rewrite(reference, tagged.pinned(digest)))
    if plan.matched == 0:
        names_read = ", ".join(str(p) for p in files) or "(no files found)"
        if plan.unpinnable:
            raise PinError(
                f"No reference to {target} in {names_read} that lockdock can pin: "
                + "; ".join(unpinnable_findings(plan)) + ".",
                hint=_UNPINNABLE_HINT,
            )
        notes = "".join(f" Note: {note}" for note in plan.notes)
        raise PinError(
            f"No reference to {target} in {names_read}: nothing to pin.{notes}",
            hint="Name the files with --file, or check the repository and tag.",
        )
    return plan


def rewritten(text: str, rewrites: Sequence[Rewrite]) -> str:
    """``text`` with each rewrite's span replaced (spans do not overlap)."""
    out = text
    for rewrite in sorted(rewrites, key=lambda r: r.reference.start, reverse=True):
        ref = rewrite.reference
        out = out[: ref.start] + rewrite.new_text + out[ref.end :]
    return out


def unpinnable_findings(plan: PinPlan) -> list[str]:
    return [f"{ref.where}: a reference to {plan.target} that lockdock cannot pin: {ref.problem}"
            for ref in plan.unpinnable]


def check_findings(plan: PinPlan) -> list[str]:
    lines = [
        f"{ref.where}: {ref.text} is not pinned (tag now at {digest})"
        for ref, digest in plan.unpinned
    ]
    lines += [
        f"{ref.where}: {ref.text} is outdated (tag now at {digest})"
        for ref, digest in plan.outdated
    ]
    lines += [
        f"{ref.where}: {ref.text} has an invalid digest, not a pin (tag now at {digest})"
        for ref, digest in plan.invalid
    ]
    return lines + unpinnable_findings(plan)


# --- edges ----------------------------------------------------------------------------


def read_files(paths: Iterable[Path]) -> dict[Path, str]:
    files: dict[Path, str] = {}
    for path in paths:
        if path.is_dir():
            raise PinError(f"{path} is a directory, not a file to pin.")
        try:
            files[path] = read_text(path)
        except FileNotFoundError:
            raise UsageError(f"File {path} does not exist.") from None
    return files


def apply(plan: PinPlan, files: dict[Path, str]) -> list[Path]:
    """Write every changed file, all or none (``write_texts_atomic``: through symlinks, and
    a file that cannot be written leaves the others unchanged too); returns them."""
    texts = {path: rewritten(files[path], rewrites) for path, rewrites in plan.rewrites.items()}
    write_texts_atomic(texts, files)
    return list(texts)


def pin(
    target_text: str,
    paths: Sequence[Path],
    *,
    check: bool = False,
    resolve: Callable[[ImageRef], str] | None = None,
    report: Callable[[str], None] = print,
) -> PinPlan:
    """``lockdock pin``: resolve, then rewrite (or, with ``check``, only judge) the files.

    Every file is read and parsed and every tag resolved before anything is written, so a
    malformed file or an unknown tag leaves all files untouched.
    """
    target = parse_reference(target_text)
    if target.digest is not None:
        raise UsageError(
            f"{target_text} already names a digest: give the tag to follow (repo:tag) or the "
            "repository (every tag referenced is pinned)."
        )
    if resolve is None:
        from lockdock.registry import RegistryClient

        resolve = RegistryClient().resolve
    files = read_files(paths)
    plan = plan_pin(target, files, resolve)
    for note in plan.notes:
        report(f"note: {note}")
    for path in plan.files_without_match:
        report(f"{path}: no reference to {target}")
    if check:
        findings = check_findings(plan)
        if findings:
            raise PinError(
                f"{len(findings)} reference(s) to {target} are not pinned to the tag's current "
                "digest: " + "; ".join(findings) + ".",
                hint=f"Run `lockdock pin {target_text}`."
                + (f" {_UNPINNABLE_HINT}" if plan.unpinnable else ""),
            )
        report(f"{plan.matched} reference(s) to {target}: all pinned to current digests")
        return plan
    for ref in plan.already_pinned:
        report(f"{ref.where}: {ref.text} already pinned")
    apply(plan, files)  # LocalFileError naming the file, every file left as it was
    for rewrites in plan.rewrites.values():
        for rewrite in rewrites:
            report(f"{rewrite.reference.where}: {rewrite.reference.text} -> {rewrite.new_text}")
    for finding in unpinnable_findings(plan):  # exit 0: --check is what fails on them
        report(f"warning: {finding}")
    return plan
