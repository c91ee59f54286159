"""lockdock: locked conda environments -> hermetic, gated, content-addressed ML images.

This package is imported inside image builds by the installer, with only the standard
library, PyYAML and py-rattler available: keep this file free of imports.
"""

__version__ = "0.1.0"
