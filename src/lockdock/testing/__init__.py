"""Helpers that tests, benchmarks and the demo share: a local conda channel factory.

``lockdock.testing.channel`` builds real ``.conda`` packages with py-rattler-build, indexes
them with py-rattler and serves the directory over loopback HTTP. The two libraries never
meet in one process (importing both aborts at interpreter exit): each runs in a subprocess.
"""

from lockdock.testing.channel import (
    BUILD_TIMESTAMP,
    ChannelServer,
    FakePackage,
    build_channel,
    index_channel,
)

__all__ = ["BUILD_TIMESTAMP", "ChannelServer", "FakePackage", "build_channel", "index_channel"]
