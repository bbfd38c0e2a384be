#!/usr/bin/env bash
# The demonstration: installs what it needs, starts a local Pushgateway, trains
# a small model that reports through runai.reporter, shows what arrived on the
# gateway, and stops everything it started.
set -euo pipefail
PIP_EXTRAS=
source "$(dirname "$0")/_setup.sh"
exec .venv/bin/python scripts/demo.py "$@"
