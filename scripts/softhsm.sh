#!/usr/bin/env bash
# A throwaway PKCS#11 token for the tests: SoftHSM2, from the distribution's packages.
#
#   scripts/softhsm.sh module             prints the module's path (installing SoftHSM2
#                                         when it is absent)
#   scripts/softhsm.sh token DIR LABEL    makes DIR/softhsm2.conf with its tokens in
#                                         DIR/tokens and a new token LABEL in it, user PIN
#                                         from $TOKEN_PIN (default 1234), SO PIN from
#                                         $TOKEN_SO_PIN (default 5678); prints the path
#                                         of the conf file, for SOFTHSM2_CONF
#
# Nothing is written outside DIR: the conf file points SoftHSM2 at DIR/tokens, so every
# process started with SOFTHSM2_CONF=DIR/softhsm2.conf shares that token and no other.
set -euo pipefail

usage="usage: softhsm.sh module | token DIR LABEL"
command=${1:?$usage}
here=$(dirname "$(readlink -f "$0")")

find_module() {
    local candidate
    for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
        if [[ -f "$candidate" ]]; then
            echo "$candidate"
            return
        fi
    done
}

module() {
    local found
    found=$(find_module)
    if [[ -z "$found" ]] || ! command -v softhsm2-util >/dev/null; then
        # Concurrent test binaries may ask at once: one installs, the others wait.
        exec 9>/tmp/keyservice-softhsm-install.lock
        flock 9
        found=$(find_module)
        if [[ -z "$found" ]] || ! command -v softhsm2-util >/dev/null; then
            "$here/install-package.sh" softhsm2 SoftHSM2
            found=$(find_module)
        fi
        flock -u 9
    fi
    if [[ -z "$found" ]]; then
        echo "softhsm.sh: SoftHSM2 was installed but its module was not found" >&2
        exit 1
    fi
    echo "$found"
}

case "$command" in
    module)
        module
        ;;
    token)
        dir=${2:?$usage}
        label=${3:?$usage}
        module >/dev/null
        mkdir -p "$dir/tokens"
        chmod 700 "$dir" "$dir/tokens"
        conf="$dir/softhsm2.conf"
        printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
            "$(readlink -f "$dir/tokens")" >"$conf"
        SOFTHSM2_CONF="$conf" softhsm2-util --init-token --free --label "$label" \
            --so-pin "${TOKEN_SO_PIN:-5678}" --pin "${TOKEN_PIN:-1234}" >/dev/null
        echo "$conf"
        ;;
    *)
        echo "$usage" >&2
        exit 2
        ;;
esac
