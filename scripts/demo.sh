#!/usr/bin/env bash
# The demonstration: installs what it needs, starts a local Pushgateway and a
# Prometheus that takes remote writes, trains a small model that reports to
# both through runai.reporter, shows what arrived (the gateway's last values,
# PromQL answers: every loss report is a sample), writes the loss curves as
# Prometheus holds them, and stops everything it started.
set -euo pipefail
PIP_FIRST="torch==2.13.0"
PIP_EXTRAS=keras,plot
EXTRA_APT=(prometheus)  # the Pushgateway comes anyway; Prometheus takes every report by remote write
source "$(dirname "$0")/_setup.sh"
export KERAS_BACKEND=torch
exec .venv/bin/python scripts/demo.py "$@"
