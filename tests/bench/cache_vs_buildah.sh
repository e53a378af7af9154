#!/usr/bin/env bash
# cache_vs_buildah.sh: a rebuild without change on a fresh machine whose
# only cache is the registry, pushed, against buildah (issue 5's
# benchmark): vs_buildah.sh's `warm` case (20 busybox RUN steps) and, with
# the Debian mirror and PyPI for the first fill, `flask`.
#
#   tests/bench/cache_vs_buildah.sh              # both, RUNS=5 rounds
#   RUNS=1 CASES=busybox20 tests/bench/cache_vs_buildah.sh
#
# CASES takes this script's old names (busybox20, flask); everything else
# is vs_buildah.sh's (its header lists the settings). Exits 1 when a round
# downloads a layer byte or misses a cached step.
set -euo pipefail
cases=${CASES:-busybox20 flask}
cases=${cases//busybox20/warm}
CASES=$cases exec "$(dirname "${BASH_SOURCE[0]}")/vs_buildah.sh" "$@"
