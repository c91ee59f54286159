"""What the payload must find in an image: from the lock, through the flavor's accelerator,
cross-checked with the image's labels (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lockdock.accelerators import Accelerator
from lockdock.facts import (
    ENV_PREFIX,
    FLAVOR_LABEL,
    lock_versions,
    packages_by_name,
    version_label_problems,
)
from lockdock.installer.lockfile import LockedArtifact


@dataclass(frozen=True)
class Expectations:
    """What the payload must find in the image (``accelerator`` holds the kind's own
    ``LOCKDOCK_EXPECT_*`` variables, e.g. the CUDA version or ``none``)."""

    flavor: str
    python: str | None
    torch: str | None
    accelerator: Mapping[str, str] = field(default_factory=dict)
    prefix: str = ENV_PREFIX

    @property
    def cuda(self) -> str | None:
        return self.accelerator.get("LOCKDOCK_EXPECT_CUDA")

    def as_environment(self) -> dict[str, str]:
        """The ``LOCKDOCK_EXPECT_*`` variables of tests/image/gatekit.py."""
        values = {
            "LOCKDOCK_EXPECT_FLAVOR": self.flavor,
            "LOCKDOCK_EXPECT_PYTHON": self.python,
            "LOCKDOCK_EXPECT_TORCH": self.torch,
            "LOCKDOCK_EXPECT_PREFIX": self.prefix,
            **self.accelerator,
        }
        return {key: value for key, value in values.items() if value}

    def as_dict(self) -> dict[str, str | None]:
        return {
            "flavor": self.flavor,
            "python": self.python,
            "torch": self.torch,
            "cuda": self.cuda,
            "accelerator": self.accelerator.get("LOCKDOCK_EXPECT_ACCELERATOR"),
            "prefix": self.prefix,
        }


def expectations(
    flavor: str,
    accelerator: Accelerator,
    artifacts: Iterable[LockedArtifact],
    labels: Mapping[str, str],
) -> tuple[Expectations, list[str]]:
    """The payload's expectations from the lock, and each disagreement with the image's labels.

    The lock is what the image was built from, so it is the expectation; a label that says
    otherwise is reported as a problem (the gate fails), never silently preferred.
    """
    artifacts = list(artifacts)
    versions = lock_versions(artifacts)
    problems = version_label_problems(versions, labels)
    flavor_label = labels.get(FLAVOR_LABEL)
    if flavor_label is not None and flavor_label != flavor:
        problems.append(
            f"image label {FLAVOR_LABEL}={flavor_label!r} but it is tested as flavor {flavor!r}"
        )
    expected = Expectations(
        flavor=flavor, python=versions.python, torch=versions.torch,
        accelerator=accelerator.expected(packages_by_name(artifacts)),
    )  # fmt: skip
    return expected, problems
