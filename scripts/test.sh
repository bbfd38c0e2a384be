#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the Pushgateway, Prometheus and the
# Python packages, checks the code with ruff, mypy and the import layers of .importlinter (a
# finding fails the run), then runs pytest. Extra arguments go to pytest (and skip the tf_keras run in its own venv).
set -euo pipefail
PIP_FIRST="torch==2.13.0"
PIP_EXTRAS=test,keras,lightning,transformers  # lightning, transformers, accelerate beside the pinned CPU torch
# The Pushgateway comes anyway; Prometheus scrapes it end to end, and takes remote writes as VictoriaMetrics does.
# podman (with runc: its default crun fails here) builds and runs the image of deploy/container/ from a base
# mmdebstrap makes (tests/test_container.py); kubectl renders deploy/kubernetes/ (tests/test_deploy.py): Debian's
# kubernetes-client where no kubectl is installed. Prometheus sends the rules' alerts
# (deploy/prometheus/rules.yml) to a real Alertmanager.
EXTRA_APT=(prometheus victoria-metrics prometheus-alertmanager podman runc mmdebstrap)
command -v kubectl >/dev/null 2>&1 || EXTRA_APT+=(kubernetes-client)
source "$(dirname "$0")/_setup.sh"
echo "==> ruff format --check, ruff check (isort included), mypy --strict (mypy.ini) and lint-imports (.importlinter)"
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/python -m mypy
PYTHONPATH=. .venv/bin/lint-imports
if [ $# -eq 0 ]; then
  # Keras 2 (tf_keras) on TensorFlow, in a venv of its own: TensorFlow beside torch in .venv would change
  # what the other Keras tests see (Keras' default backend would load). About 95 s of installs, 2.2 GB.
  echo "==> the tf_keras tests, in .venv-tf (tensorflow-cpu and tf-keras 2.21.0)"
  [ -x .venv-tf/bin/python ] || python3 -m venv .venv-tf
  .venv-tf/bin/python -m pip install -q --disable-pip-version-check tensorflow-cpu==2.21.0 tf-keras==2.21.0 \
    -e ".[test,keras]"
  .venv-tf/bin/python -c "import tf_keras"  # fail here, not as a quiet skip in the test
  TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow .venv-tf/bin/python -m pytest -q -p no:cacheprovider -k tf_keras tests/test_keras.py
fi
echo "==> running the tests"
export KERAS_BACKEND=torch
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
