"""Environment-truth gate: the interpreter, PyTorch and CUDA are what the image claims.

The host passes the expectations from the image's labels and lock as environment variables
(``LOCKDOCK_EXPECT_*``, see gatekit.py). A check without an expectation is skipped with the
reason, never passed.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import gatekit
import pytest
import torch


def _expected(variable: str) -> str:
    value = os.environ.get(variable, "").strip()
    if not value:
        pytest.skip(f"no expectation given (${variable} unset)")
    return value


def versions_match(observed: str, expected: str) -> bool:
    """Equal, or ``expected`` names fewer components (``3.11`` matches ``3.11.9``), or
    ``expected`` has no local label and matches the public part (``2.13.0`` ~ ``2.13.0+cpu``)."""
    if observed == expected:
        return True
    public = observed.split("+", 1)[0]
    if "+" not in expected and public == expected:
        return True
    return "+" not in expected and public.startswith(expected + ".")


def test_python_version(observe: Any) -> None:
    expected = _expected(gatekit.EXPECT_PYTHON)
    observed = platform.python_version()
    observe(
        "Python version",
        expected=expected,
        observed=observed,
        ok=versions_match(observed, expected),
    )


def test_interpreter_is_the_locked_environment(observe: Any) -> None:
    expected = _expected(gatekit.EXPECT_PREFIX)
    observe(
        "interpreter prefix",
        expected=expected,
        observed=sys.prefix,
        ok=os.path.realpath(sys.prefix) == os.path.realpath(expected),
    )


def test_torch_version(observe: Any) -> None:
    expected = _expected(gatekit.EXPECT_TORCH)
    observe(
        "PyTorch version",
        expected=expected,
        observed=torch.__version__,
        ok=versions_match(torch.__version__, expected),
    )


def _cuda_expected() -> bool:
    """A CUDA build is wanted when a CUDA version is expected, or the accelerator kind is
    CUDA's (its lock then lacks the runtime: a CPU torch in a CUDA image must fail)."""
    kind = os.environ.get(gatekit.EXPECT_ACCELERATOR, "").strip().lower()
    cuda = os.environ.get(gatekit.EXPECT_CUDA, "").strip().lower()
    if cuda and cuda != "none":
        return True
    if kind == "cuda":
        return True
    if cuda == "none":
        return False
    pytest.skip(
        f"accelerator {kind or '(unset)'} does not say whether PyTorch must be a CUDA build: "
        f"set ${gatekit.EXPECT_CUDA} to a version or to 'none'"
    )


def test_torch_build_matches_flavor(observe: Any, components: gatekit.Components) -> None:
    """A CUDA image must not carry a CPU-only PyTorch, and a CPU image no CUDA build."""
    wants_cuda = _cuda_expected()
    flavor = os.environ.get(gatekit.EXPECT_FLAVOR, "") or "?"
    torch_cuda, cuda_built = components.torch_build()
    observed = f"torch.version.cuda={torch_cuda}, torch.backends.cuda.is_built()={cuda_built}"
    if wants_cuda:
        expected = f"flavor {flavor}: a CUDA build of PyTorch"
    else:
        expected = f"flavor {flavor}: a CPU build (torch.version.cuda=None)"
    ok = gatekit.build_matches_flavor(wants_cuda, torch_cuda, cuda_built)
    observe("PyTorch build matches flavor", expected=expected, observed=observed, ok=ok)


def test_rocm_version(observe: Any) -> None:
    expected = os.environ.get(gatekit.EXPECT_ROCM, "").strip()
    if not expected:
        pytest.skip("no ROCm runtime expected (the accelerator kind sets LOCKDOCK_EXPECT_ROCM)")
    observed = getattr(torch.version, "hip", None)
    observe(
        "ROCm (HIP) version PyTorch was built with",
        expected=expected,
        observed=str(observed),
        ok=observed is not None and versions_match(str(observed), expected),
    )


def test_cuda_version(observe: Any, components: gatekit.Components) -> None:
    expected = _expected(gatekit.EXPECT_CUDA)
    if expected.lower() == "none":
        pytest.skip("CPU image: no CUDA version expected")
    observed, _built = components.torch_build()
    observe(
        "CUDA version PyTorch was built with",
        expected=expected,
        observed=observed,
        ok=observed is not None and versions_match(observed, expected),
    )
