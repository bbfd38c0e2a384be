#!/usr/bin/env bash
# The demonstration: installs what it needs, starts a local Pushgateway, trains
# a small model that reports through runai.reporter, shows what arrived on the
# gateway, and stops everything it started.
set -euo pipefail
PIP_FIRST="torch==2.13.0"
PIP_EXTRAS=keras
source "$(dirname "$0")/_setup.sh"
export KERAS_BACKEND=torch
exec .venv/bin/python scripts/demo.py "$@"
