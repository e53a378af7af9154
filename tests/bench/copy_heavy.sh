#!/usr/bin/env bash
# copy_heavy.sh: a COPY-heavy build (10,000 files, 500 MiB, FROM scratch)
# against buildah, and executor's peak RSS on a 2 GiB file and on 100,000
# files: vs_buildah.sh's `copy`, `big` and `many` cases.
#
#   tests/bench/copy_heavy.sh                    # RUNS=5 copy rounds, one of big and many
#   CASES=copy RUNS=1 tests/bench/copy_heavy.sh
#
# Everything else is vs_buildah.sh's (its header lists the settings).
set -euo pipefail
CASES=${CASES:-copy big many} exec "$(dirname "${BASH_SOURCE[0]}")/vs_buildah.sh" "$@"
