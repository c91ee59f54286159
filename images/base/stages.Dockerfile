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
COPY src/lockdock/__init__.py src/lockdock/errors.py src/lockdock/fsutil.py src/lockdock/platform.py src/lockdock/progress.py src/lockdock/textio.py /installer/src/lockdock/
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
# A flavor's own solo-layer threshold in MiB (flavor.toml `solo-layer-mib`; README "Layers").
ARG SOLO_LAYER_MIB
# Compiled pycs per wheel, kept between builds (lockdock/installer/pyc_cache.py): a relock
# that keeps torch does not compile its sources again. The prefix itself is a cache mount
# too, one per lock file, kept from the last build of that lock (install-env): a relock
# installs what changed and removes what went, instead of installing everything. Builds of
# one lock take turns on it (sharing=locked). PYC_CACHE=off (verify-repro) uses neither:
# it compiles everything into an emptied prefix.
ARG PYC_CACHE
RUN --network=none \
    --mount=type=cache,id=lockdock-pyc,target=/var/cache/lockdock/pyc \
    --mount=type=cache,id=lockdock-prefix-${TARGETARCH}-${LOCK},target=/opt/conda/envs/lockdock,sharing=locked \
    --mount=type=bind,from=store,target=/store \
    --mount=type=bind,source=${LOCK},target=/tmp/lockdock/conda-lock.yml \
    --mount=type=bind,source=images/base/build,target=/tmp/lockdock/build \
    /tmp/lockdock/build/install-env /tmp/lockdock/conda-lock.yml

# shipped: the lock and its SBOM as the trees /lock and /sbom (usr/share/lockdock/...) with
# fixed times, written here rather than copied from the context, whose files keep the times
# of a checkout or of a build (lockdock.installer.layers --ship).
FROM installer-env AS shipped
ARG LOCK
ARG SOURCE_DATE_EPOCH
RUN --network=none \
    --mount=type=bind,source=${LOCK},target=/tmp/lockdock/conda-lock.yml \
    --mount=type=bind,from=sbom,target=/tmp/lockdock/sbom \
    export PYTHONPATH=/opt/lockdock-installer/src \
    && /opt/lockdock-installer/bin/python -m lockdock.installer.layers \
        --ship /tmp/lockdock/conda-lock.yml --ship-out /lock \
    && /opt/lockdock-installer/bin/python -m lockdock.installer.layers \
        --ship /tmp/lockdock/sbom --ship-out /sbom

# environment: the base with the locked environment. Every flavor's final stage starts FROM
# it (images/<flavor>/Dockerfile adds only what the flavor itself needs).
FROM lockdock-base AS environment
# The environment: 56 fixed layer slots the builder's splitter fills by owning package
# (lockdock/installer/layer_plan.py; README "Layers"). --link: each layer's bytes are its
# files' alone, so unchanged packages keep their layer digests across relocks and flavors.
# The slots never change when the lock does: this file does not either.
COPY --link --from=builder /layers/00/ /
COPY --link --from=builder /layers/01/ /
COPY --link --from=builder /layers/02/ /
COPY --link --from=builder /layers/03/ /
COPY --link --from=builder /layers/04/ /
COPY --link --from=builder /layers/05/ /
COPY --link --from=builder /layers/06/ /
COPY --link --from=builder /layers/07/ /
COPY --link --from=builder /layers/08/ /
COPY --link --from=builder /layers/09/ /
COPY --link --from=builder /layers/10/ /
COPY --link --from=builder /layers/11/ /
COPY --link --from=builder /layers/12/ /
COPY --link --from=builder /layers/13/ /
COPY --link --from=builder /layers/14/ /
COPY --link --from=builder /layers/15/ /
COPY --link --from=builder /layers/16/ /
COPY --link --from=builder /layers/17/ /
COPY --link --from=builder /layers/18/ /
COPY --link --from=builder /layers/19/ /
COPY --link --from=builder /layers/20/ /
COPY --link --from=builder /layers/21/ /
COPY --link --from=builder /layers/22/ /
COPY --link --from=builder /layers/23/ /
COPY --link --from=builder /layers/24/ /
COPY --link --from=builder /layers/25/ /
COPY --link --from=builder /layers/26/ /
COPY --link --from=builder /layers/27/ /
COPY --link --from=builder /layers/28/ /
COPY --link --from=builder /layers/29/ /
COPY --link --from=builder /layers/30/ /
COPY --link --from=builder /layers/31/ /
COPY --link --from=builder /layers/32/ /
COPY --link --from=builder /layers/33/ /
COPY --link --from=builder /layers/34/ /
COPY --link --from=builder /layers/35/ /
COPY --link --from=builder /layers/36/ /
COPY --link --from=builder /layers/37/ /
COPY --link --from=builder /layers/38/ /
COPY --link --from=builder /layers/39/ /
COPY --link --from=builder /layers/40/ /
COPY --link --from=builder /layers/41/ /
COPY --link --from=builder /layers/42/ /
COPY --link --from=builder /layers/43/ /
COPY --link --from=builder /layers/44/ /
COPY --link --from=builder /layers/45/ /
COPY --link --from=builder /layers/46/ /
COPY --link --from=builder /layers/47/ /
COPY --link --from=builder /layers/48/ /
COPY --link --from=builder /layers/49/ /
COPY --link --from=builder /layers/50/ /
COPY --link --from=builder /layers/51/ /
COPY --link --from=builder /layers/52/ /
COPY --link --from=builder /layers/53/ /
COPY --link --from=builder /layers/54/ /
COPY --link --from=builder /layers/55/ /
# The lock and its SBOM (none for plain `docker build`, whose sbom stage is empty), as the
# shipped stage wrote them: no layer of this stage carries the time of a checkout or a build.
COPY --link --from=shipped /lock/ /
COPY --link --from=shipped /sbom/ /
