"""Session-wide test configuration. Fixtures live in tests/fixtures/ (one file per concern)."""

from __future__ import annotations

import pytest

pytest_plugins: list[str] = [
    "tests.fixtures.channel",
    "tests.fixtures.cpython",
    "tests.fixtures.engine",
    "tests.fixtures.images",
    "tests.fixtures.devtools",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-cuda-image",
        action="store_true",
        default=False,
        help="build the CUDA image (pulls several GB of NVIDIA wheels from PyPI)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-cuda-image"):
        return
    skip = pytest.mark.skip(reason="CUDA image build is opt-in: pass --run-cuda-image")
    for item in items:
        if "cuda_image" in item.keywords:
            item.add_marker(skip)
