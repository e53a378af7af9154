#!/usr/bin/env bash
# run_cold.sh: cold builds with RUN steps against buildah: vs_buildah.sh's
# `cold` case (20 busybox RUN steps) and, with the Debian mirror, `apt`.
#
#   tests/bench/run_cold.sh                      # both, RUNS=5 rounds
#   RUNS=1 CASES=busybox20 tests/bench/run_cold.sh
#
# CASES takes this script's old names (busybox20, apt); everything else is
# vs_buildah.sh's (its header lists the settings).
set -euo pipefail
cases=${CASES:-busybox20 apt}
cases=${cases//busybox20/cold}
CASES=$cases exec "$(dirname "${BASH_SOURCE[0]}")/vs_buildah.sh" "$@"
