#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the Pushgateway, Prometheus and the
# Python packages, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
PIP_FIRST="torch==2.13.0"
PIP_EXTRAS=test,keras
EXTRA_APT=(prometheus)  # the Pushgateway comes anyway; Prometheus scrapes it end to end
source "$(dirname "$0")/_setup.sh"
echo "==> running the tests"
export KERAS_BACKEND=torch
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
