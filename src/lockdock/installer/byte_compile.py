"""Byte-compiling a prefix's sources with the prefix's own interpreter, in ``jobs`` processes,
while the wheel installer still extracts the rest (``Compilation``): checked-hash pycs with
``PYTHONHASHSEED=0``, so each depends on its source, its path and the interpreter only.
Standard library only: part of the installer.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from lockdock.errors import InstallError

COMPILE_WORKER = """\
import concurrent.futures, importlib.util, multiprocessing, os, py_compile, sys, warnings
warnings.simplefilter("ignore")  # SyntaxWarnings of packages' sources: pip shows none either
def one(path):
    try:
        py_compile.compile(path, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    except (py_compile.PyCompileError, OSError, ValueError):
        return None
    return path + "\\0" + importlib.util.cache_from_source(path) + "\\0"
def many(paths):
    return [one(p) for p in paths]
def batches():
    # Paths arrive NUL-terminated while the installer still extracts: compile as they come.
    pending = b""
    for chunk in iter(lambda: sys.stdin.buffer.read1(1 << 16), b""):
        *paths, pending = (pending + chunk).split(b"\\0")
        for start in range(0, len(paths), 32):
            yield [os.fsdecode(p) for p in paths[start:start + 32]]
jobs = int(sys.argv[1])
if jobs > 1:
    fork = multiprocessing.get_context("fork")  # functions of a -c script: no spawn
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=fork) as pool:
        futures = [pool.submit(many, batch) for batch in batches()]
        done = [line for future in futures for line in future.result()]
else:
    done = [line for batch in batches() for line in many(batch)]
sys.stdout.write("".join(line for line in done if line))
"""


class Compilation:
    """The prefix's interpreter byte-compiling, in ``jobs`` processes, the sources ``submit``
    names while the installer still extracts the rest; ``result()`` collects them. Leaving
    the block stops it if it still runs (an extraction failed)."""

    def __init__(self, python: Path, env: dict[str, str], jobs: int) -> None:
        self.python = python
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by __exit__
        self.proc = subprocess.Popen(
            [str(python), "-c", COMPILE_WORKER, str(jobs)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
            env={**env, "PYTHONHASHSEED": "0"},
        )  # fmt: skip

    def submit(self, sources: Iterable[Path]) -> None:
        """Compile ``sources`` (already written). The worker reads its input as it comes and
        writes only at the end, so this never blocks on its output."""
        assert self.proc.stdin is not None
        data = b"".join(os.fsencode(p) + b"\0" for p in sources)
        if data and not self.proc.stdin.closed:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except BrokenPipeError:  # the worker died: result() reports its error
                with contextlib.suppress(BrokenPipeError):
                    self.proc.stdin.close()

    def result(self) -> dict[Path, Path]:
        """source -> pyc written (named with the prefix interpreter's cache tag, not ours)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        out = self.proc.stdout.read()
        code = self.proc.wait()
        self.errors.seek(0)
        errors = self.errors.read().decode(errors="replace")
        if code != 0:
            tail = errors.strip().splitlines()[-10:]
            raise InstallError(f"byte-compiling with {self.python} failed:\n" + "\n".join(tail))
        fields = out.decode().split("\0")[:-1]
        return {Path(src): Path(pyc) for src, pyc in zip(fields[::2], fields[1::2], strict=True)}

    def __enter__(self) -> Compilation:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.errors.close()
