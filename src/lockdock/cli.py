"""Command line: parse, delegate, turn LockdockError into a message and an exit code.

Each command is a few lines that call into the pipeline module it names; no logic here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lockdock.errors import LockdockError


class _Context:
    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir


pass_ctx = click.make_pass_decorator(_Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C",
    "--project",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Project directory (holds environment.yml and images/).",
)
@click.version_option(package_name="lockdock")
@click.pass_context
def cli(ctx: click.Context, project_dir: Path) -> None:
    """Lock, fetch, build, gate, publish and pin reproducible ML images."""
    ctx.obj = _Context(project_dir)


# --- lock (spec -> lock) -------------------------------------------------------------

# --- fetch / install (lock -> store -> prefix) ---------------------------------------

# --- build / verify-repro (store -> image) -------------------------------------------

# --- test (image -> gate report) -----------------------------------------------------

# --- publish / pin / devcontainer / sbom (report -> registry -> projects) -----------


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="lockdock", standalone_mode=False)
    except LockdockError as error:
        click.echo(f"lockdock: error: {error}", err=True)
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("lockdock: aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(2)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    sys.exit(0)


if __name__ == "__main__":
    main()
