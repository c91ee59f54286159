"""The installer: lock reading, the artifact store and the prefix installer.

Image builds run it inside the builder stage with nothing but the base's Python, PyYAML and
py-rattler (``python -m lockdock.installer.install``), so every module here imports only the
standard library, PyYAML, py-rattler and the foundation modules named in
``INSTALLER_SOURCES`` (tests/unit/test_installer_imports.py checks the real import closure).
"""

from __future__ import annotations

#: What both build paths copy into the image as the installer, relative to ``src/lockdock``:
#: this package whole, plus the foundation modules it imports. The plain ``docker build .``
#: path copies the same list (images/base/stages.Dockerfile; a test binds the two).
INSTALLER_SOURCES = (
    "__init__.py", "errors.py", "fsutil.py", "platform.py", "progress.py", "textio.py", "installer"
)
