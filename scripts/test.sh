#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the Pushgateway, Prometheus and the
# Python packages, checks the code with ruff and mypy (a finding fails the run), then runs
# pytest. Extra arguments go to pytest.
set -euo pipefail
PIP_FIRST="torch==2.13.0"
PIP_EXTRAS=test,keras
EXTRA_APT=(prometheus)  # the Pushgateway comes anyway; Prometheus scrapes it end to end
source "$(dirname "$0")/_setup.sh"
echo "==> ruff check and mypy --strict (mypy.ini) over runai/ and uploader/"
.venv/bin/ruff check .
.venv/bin/python -m mypy
echo "==> running the tests"
export KERAS_BACKEND=torch
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
