#!/usr/bin/env bash
# The demonstration: installs what it needs, starts a local Pushgateway and a
# Prometheus that scrapes it, trains a small model that reports through
# runai.reporter, shows what arrived (the gateway's series, PromQL answers),
# writes the loss curve from the local spool, and stops everything it started.
set -euo pipefail
PIP_FIRST="torch==2.13.0"
PIP_EXTRAS=keras,plot
EXTRA_APT=(prometheus)  # the Pushgateway comes anyway; Prometheus scrapes it end to end
source "$(dirname "$0")/_setup.sh"
export KERAS_BACKEND=torch
exec .venv/bin/python scripts/demo.py "$@"
