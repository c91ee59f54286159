"""Images: store + lock -> a BuildKit build of ``images/base`` + ``images/<flavor>``.

- ``dockerfile``: the Dockerfile rendered from its three parts (pure + one writer);
- ``plan``: labels, tags, ``SOURCE_DATE_EPOCH``, the buildx argv (pure);
- ``stage``: the build inputs on disk (edges);
- ``build``: ``lockdock build``; ``repro``: ``lockdock verify-repro``.

Docker and BuildKit are reached only through ``lockdock.engine``.
"""
