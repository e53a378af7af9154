# Sourced by the examples' run scripts, from the repository's root, after
# they define `say`.
#
# install_missing PACKAGE...: installs the Debian packages given (apt-get,
# as root) unless the list is empty; without root, says what is missing
# and exits 1.
#
# executor_binary: sets `executor` to EXECUTOR when set, else builds
# executor (release) and sets it to that binary (under CARGO_TARGET_DIR
# when set).

install_missing() {
    [ $# -gt 0 ] || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: $* (run as root, or install them)" >&2
        exit 1
    fi
    say "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" ca-certificates >/dev/null
}

executor_binary() {
    if [ -n "${EXECUTOR:-}" ]; then
        executor=$EXECUTOR
    else
        say "building executor (release)"
        cargo build --release --locked -p executor --bin executor
        executor="${CARGO_TARGET_DIR:-$PWD/target}/release/executor"
    fi
}
