"""The one exception hierarchy. The CLI prints ``str(error)`` and exits with ``exit_code``.

Standard library only: the installer imports this inside image builds.
Exit codes are documented in README.md ("Exit codes"); keep the two in step.
"""

from __future__ import annotations


class LockdockError(Exception):
    """A failure the user can act on: a one-paragraph message, no traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} {hint}")


class UsageError(LockdockError):
    """Bad command-line input: unknown flavor, platform, category or option value."""

    exit_code = 2


class SpecError(LockdockError):
    """The project's inputs are invalid: malformed YAML, unknown key, bad match spec, layout."""

    exit_code = 3


class SolveError(LockdockError):
    """The specs cannot be satisfied, or a pip requirement has no wheel for a platform."""

    exit_code = 4


class NetworkError(LockdockError):
    """A channel, index, download or registry could not be reached."""

    exit_code = 5


class StaleLockError(LockdockError):
    """A lock does not match its inputs (``lock --check``), or is missing."""

    exit_code = 6


class IntegrityError(LockdockError):
    """A hash mismatch, a missing artifact, or a prefix that is not exactly the lock."""

    exit_code = 7


class InstallError(LockdockError):
    """The install could not be carried out (bad target prefix, installer failure)."""

    exit_code = 8


class EngineError(LockdockError):
    """The Docker engine or buildx is missing or not answering."""

    exit_code = 9


class BuildError(LockdockError):
    """An image build failed."""

    exit_code = 10


class GateError(LockdockError):
    """At least one gate failed inside the image."""

    exit_code = 11


class ReproducibilityError(LockdockError):
    """Two builds from scratch gave different digests."""

    exit_code = 12


class RegistryError(LockdockError):
    """A registry refused, was unreachable, or does not know a tag."""

    exit_code = 13


class PublishRefusedError(LockdockError):
    """Publishing was refused: no passing gate report for this exact image digest."""

    exit_code = 14


class PinError(LockdockError):
    """``pin`` found nothing to pin, a malformed file, or unpinned references (``--check``)."""

    exit_code = 15


class LocalFileError(LockdockError):
    """A local file or directory could not be read or written: permission denied, a read-only
    file system, no space left, a directory where a file should be. Names the path.

    Its own code so that a retry loop can tell it from a network failure (5): retrying does
    not help, fixing the path does.
    """

    exit_code = 16


#: Exit status of a run interrupted by Ctrl-C (SIGINT), as shells report 128 + 2.
INTERRUPTED_EXIT = 130
