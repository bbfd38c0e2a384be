#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the Pushgateway and the
# Python packages, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
PIP_EXTRAS=test
source "$(dirname "$0")/_setup.sh"
echo "==> running the tests"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
