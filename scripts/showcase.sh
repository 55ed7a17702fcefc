#!/usr/bin/env bash
# Build sal and run the showcase: a heap in a temporary directory, a tree
# changed by copy-on-write next to a snapshot, and the heap reopened.
#
#     scripts/showcase.sh [HEAP-FILE]
#
# Installs what is missing to build (with apt-get, as root or with sudo),
# configures build/, builds the showcase and runs build/examples/sal-showcase.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
sal_help_requested "$@"
cd "$SAL_ROOT"

# shellcheck disable=SC2046
sal_need_packages $(sal_build_packages)

# The test suite needs CMocka; the showcase does not.  Build the tests too
# when CMocka is there, so that build/ stays one build tree for both.
options=()
if ! sal_have_cmocka; then
    options+=(-DSAL_BUILD_TESTS=OFF)
fi

echo "==> configuring build/"
cmake -S . -B build "${options[@]}" >/dev/null
echo "==> building the showcase"
cmake --build build --target sal-showcase -j "$(sal_jobs)" >/dev/null
echo "==> running build/examples/sal-showcase"
echo
exec build/examples/sal-showcase "$@"
