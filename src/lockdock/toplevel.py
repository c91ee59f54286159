"""The guard around every lockdock command: a LockdockError becomes its one-paragraph message
and exit code, a usage error exit 2, Ctrl-C exit 130 at once, and anything unexpected one
paragraph naming the file that holds the traceback -- never a traceback on the terminal.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from lockdock.errors import INTERRUPTED_EXIT, LockdockError


def _interrupted() -> NoReturn:
    """Ctrl-C: remove this run's download temp files and exit 130 now, without joining
    worker threads that may sit in a stalled read until their timeout."""
    from lockdock.installer.download import remove_active_temps

    remove_active_temps()
    click.echo("lockdock: interrupted", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED_EXIT)


def _bug(error: BaseException) -> NoReturn:
    """An exception lockdock did not expect: one paragraph, the traceback in a file."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(error))
    try:
        fd, name = tempfile.mkstemp(prefix="lockdock-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"lockdock {' '.join(sys.argv[1:])}\n\n{text}")
        where = f"The full traceback is in {name}"
    except OSError:
        where = "The traceback could not be saved to a file"
    click.echo(
        f"lockdock: internal error: {type(error).__name__}: {error}. This is a bug in lockdock, "
        f"not a mistake of yours. {where}; please attach it to a bug report.",
        err=True,
    )
    sys.exit(1)


def run_guarded(command: click.Command, argv: list[str] | None = None) -> NoReturn:
    """Run ``command`` as the ``lockdock`` program and exit with its code."""
    try:
        command.main(args=argv, prog_name="lockdock", standalone_mode=False)
    except LockdockError as error:
        click.echo(f"lockdock: error: {error}", err=True)
        sys.exit(error.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _interrupted()
    except click.ClickException as error:
        error.show()
        sys.exit(2)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except Exception as error:  # the top-level guard: no traceback for anything
        _bug(error)
    sys.exit(0)
