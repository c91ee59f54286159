# Activate the locked environment at /opt/conda/envs/lockdock (POSIX sh).
# Sourced by the entrypoint (docker run IMAGE cmd) and by /etc/bash.bashrc (interactive
# shells, docker exec). The image's ENV already puts the environment first on PATH; this adds
# what `conda activate` would: CONDA_* variables and the packages' activate.d scripts.
LOCKDOCK_PREFIX=${LOCKDOCK_PREFIX:-/opt/conda/envs/lockdock}
if [ -d "$LOCKDOCK_PREFIX" ]; then
    case ":$PATH:" in
        ":$LOCKDOCK_PREFIX/bin:"*) ;;
        *) PATH="$LOCKDOCK_PREFIX/bin:$PATH" ;;
    esac
    export PATH CONDA_PREFIX="$LOCKDOCK_PREFIX" CONDA_DEFAULT_ENV=lockdock
    if [ -z "${LOCKDOCK_ACTIVATED:-}" ]; then
        LOCKDOCK_ACTIVATED=1
        export LOCKDOCK_ACTIVATED
        for lockdock_script in "$LOCKDOCK_PREFIX"/etc/conda/activate.d/*.sh; do
            [ -r "$lockdock_script" ] && . "$lockdock_script"
        done
        unset lockdock_script
    fi
fi
# Interactive shells (/etc/bash.bashrc sources this last): show the active environment in the
# prompt as `conda activate` does, once, whatever the base image's PS1 is.
case $- in
    *i*)
        case ${PS1-} in
            "(lockdock) "*) ;;
            *) PS1="(lockdock) ${PS1-\$ }" ;;
        esac ;;
esac
