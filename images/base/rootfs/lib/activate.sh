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
# Interactive shells (/etc/bash.bashrc sources this): show the active environment in the
# prompt as `conda activate` does. Through PROMPT_COMMAND, because ~/.bashrc (read after
# /etc/bash.bashrc) sets its own PS1; the prefix is added once, whatever PS1 is.
case $- in
    *i*)
        lockdock_prompt() {
            case ${PS1-} in
                "(lockdock) "*) ;;
                *) PS1="(lockdock) ${PS1-\$ }" ;;
            esac
        }
        case ${PROMPT_COMMAND-} in
            *lockdock_prompt*) ;;
            *) PROMPT_COMMAND="lockdock_prompt${PROMPT_COMMAND:+;$PROMPT_COMMAND}" ;;
        esac ;;
esac
