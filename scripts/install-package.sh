#!/usr/bin/env bash
# Installs one package from the distribution (Debian: apt-get), for a test script that
# found it missing. Needs root; says which package and why otherwise.
#
#   scripts/install-package.sh PACKAGE WHAT
#
# WHAT names it in messages ("PostgreSQL", "Chromium"). Progress goes to standard error.
set -euo pipefail
package=${1:?usage: install-package.sh PACKAGE WHAT}
what=${2:?usage: install-package.sh PACKAGE WHAT}
echo "install-package.sh: installing $what from the distribution's packages ($package)" >&2
if [[ $(id -u) -ne 0 ]]; then
    echo "install-package.sh: $what is not installed and installing it needs root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "$package" >&2
