# Stages every flavor shares: the installer, the artifact store, and the builder that installs
# the flavor's lock. Rendered between images/base/Dockerfile and images/<flavor>/Dockerfile.
ARG LOCK=conda-lock.yml

# installer: lockdock's installer source + hashed wheels of its dependencies (PyYAML,
# py-rattler). `lockdock build` replaces this stage with --build-context installer=<dir>
# (wheels it downloaded with pip --require-hashes); this default downloads them here.
FROM lockdock-base AS installer-download
USER root
COPY images/base/installer-requirements.txt /installer/requirements.txt
# INSTALLER_SOURCES (src/lockdock/installer/__init__.py): the installer package whole and the
# foundation modules it imports; nothing else of lockdock, so other changes keep this cached.
COPY src/lockdock/__init__.py src/lockdock/errors.py src/lockdock/fsutil.py src/lockdock/progress.py src/lockdock/textio.py /installer/src/lockdock/
COPY src/lockdock/installer/ /installer/src/lockdock/installer/
RUN python3 -m venv /tmp/pip \
    && /tmp/pip/bin/pip download --no-deps --only-binary=:all: --require-hashes \
        -r /installer/requirements.txt -d /installer/wheels
FROM scratch AS installer
COPY --from=installer-download /installer/ /

# installer-env: a venv of the base's python3 with the installer's dependencies, offline.
FROM lockdock-base AS installer-env
USER root
RUN --network=none --mount=type=bind,from=installer,target=/installer \
    python3 -m venv /opt/lockdock-installer \
    && /opt/lockdock-installer/bin/pip install --no-index --no-deps --only-binary=:all: \
        --require-hashes --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        --find-links /installer/wheels -r /installer/requirements.txt \
    && cp -r /installer/src /opt/lockdock-installer/src

# store: every artifact of the lock. `lockdock build` replaces it with
# --build-context store=.lockdock/store (fetched and verified by `lockdock fetch`); this
# default downloads them here, each checked against the lock's sha256.
FROM installer-env AS store-download
ARG LOCK
ARG TARGETARCH
RUN --mount=type=bind,source=${LOCK},target=/tmp/lockdock/conda-lock.yml \
    --mount=type=bind,source=images/base/build,target=/tmp/lockdock/build \
    /tmp/lockdock/build/fetch-store /tmp/lockdock/conda-lock.yml
FROM scratch AS store
COPY --from=store-download /store/ /

# sbom: the lock's CycloneDX SBOM. `lockdock build` passes --build-context sbom=<dir holding
# sbom.cdx.json>; plain `docker build .` has no lockdock to write one, and ships none.
FROM scratch AS sbom

# builder: install the lock from the store with no network, verified against the lock, then
# split by owning package into the layer slots /layers/00 .. /layers/55 (install-env).
FROM installer-env AS builder
ARG LOCK
ARG TARGETARCH
ARG SOURCE_DATE_EPOCH
RUN --network=none \
    --mount=type=bind,from=store,target=/store \
    --mount=type=bind,source=${LOCK},target=/tmp/lockdock/conda-lock.yml \
    --mount=type=bind,source=images/base/build,target=/tmp/lockdock/build \
    /tmp/lockdock/build/install-env /tmp/lockdock/conda-lock.yml
