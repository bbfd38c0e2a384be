#!/usr/bin/env bash
# Builds the uploader and agent image (Dockerfile here) and prints its tag on stdout, alone.
#
#   deploy/container/build.sh [--base IMAGE] [--tag TAG]
#
# --base: the base image (default: the Dockerfile's, python:3.12-slim); it needs python3 >= 3.10 and venv.
# --tag:  the image's name (default: runai-reporter:<the package's version>).
# Environment: ENGINE (podman or docker; default: podman if installed, else docker), PYTHON (the host's python3
# with pip that fetches the wheels; default python3). pip's own variables (PIP_INDEX_URL, ...) apply.
#
# The wheels are fetched on the host for the base's Python and platform (asked of the base itself), then
# installed in the image with --no-index: the build needs no network, the host only a package index.
set -euo pipefail

die() { echo "build.sh: $*" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BASE=""
TAG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --base) [ $# -ge 2 ] || die "--base needs an image"; BASE=$2; shift 2 ;;
    --base=*) BASE=${1#--base=}; shift ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a name"; TAG=$2; shift 2 ;;
    --tag=*) TAG=${1#--tag=}; shift ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (usage: build.sh [--base IMAGE] [--tag TAG])" ;;
  esac
done
if [ -z "$BASE" ]; then
  BASE=$(sed -n 's/^ARG BASE=//p' "$HERE/Dockerfile")
fi

ENGINE=${ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$ENGINE" ] || die "no container engine: install podman (apt-get install podman runc) or docker"
command -v "$ENGINE" >/dev/null || die "ENGINE=$ENGINE is not an executable on PATH"
engine=("$ENGINE")
# Debian's podman 4.3 fails with its default crun on some kernels' cgroup setups (a RUN step included);
# runc works wherever it is installed.
limits=()
if [ "$(basename "$ENGINE")" = podman ]; then
  if command -v runc >/dev/null; then engine+=(--runtime runc); fi
  # podman's default limits ask for more open files than some hosts (CI sandboxes) let a container have, and
  # then every run fails: the probe and the build's RUN step need only a few.
  limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip --version >/dev/null 2>&1 ||
  die "$PYTHON has no pip to fetch the wheels with: set PYTHON to a python3 that has (a venv's), or apt-get install python3-pip"

if [ -z "$TAG" ]; then
  version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$REPO/runai/reporter/_version.py")
  [ -n "$version" ] || die "no __version__ in runai/reporter/_version.py"
  TAG="runai-reporter:$version"
fi

context=$(mktemp -d "${TMPDIR:-/tmp}/runai-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
mkdir "$context/wheels"

# The base's Python version, ABI and the wheel platforms it accepts (newest first).
PROBE='
import platform, sys
if sys.version_info < (3, 10):
    sys.exit("the base has Python %d.%d; runai needs 3.10 or newer" % sys.version_info[:2])
m = platform.machine()
libc, version = platform.libc_ver()
if libc == "glibc":
    minor = int(version.split(".")[1])
    platforms = ["manylinux_2_%d_%s" % (n, m) for n in range(minor, 16, -1)] + ["manylinux2014_" + m]
else:
    platforms = ["musllinux_1_%d_%s" % (n, m) for n in (2, 1)]
print("%d.%d" % sys.version_info[:2], "cp%d%d" % sys.version_info[:2], *platforms)
'
echo "==> asking $BASE for its Python" >&2
probe=$("${engine[@]}" run --rm "${limits[@]}" --network=none --entrypoint python3 "$BASE" -c "$PROBE") ||
  die "could not run python3 in $BASE (is it pulled or pullable, with python3 on its PATH? Without a registry, give a local base with --base IMAGE)"
read -r py_version abi platforms <<<"$probe"
platform_args=()
for p in $platforms; do platform_args+=(--platform "$p"); done

echo "==> wheels for Python $py_version ($abi, ${platforms%% *}) in $context/wheels" >&2
# A fixed SOURCE_DATE_EPOCH makes the package's wheel the same bytes for the same sources: the image's
# layers are then reused by a second build.
(cd "$REPO" && SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel --quiet --disable-pip-version-check \
  --no-deps --wheel-dir "$context/wheels" .) >&2 || die "pip wheel of $REPO failed"
wheel=$(ls "$context"/wheels/runai-*.whl)
"$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --dest "$context/wheels" \
  --python-version "$py_version" --implementation cp --abi "$abi" --abi abi3 --abi none "${platform_args[@]}" \
  "$wheel" >&2 || die "pip could not fetch the dependencies' wheels for Python $py_version ($platforms)"

cp "$HERE/Dockerfile" "$HERE/.dockerignore" "$context/"
# --network=none: the wheels are all there, so the build never reaches out (nor needs a container network).
echo "==> ${engine[*]} build --build-arg BASE=$BASE --tag $TAG" >&2
"${engine[@]}" build "${limits[@]}" --network=none --build-arg "BASE=$BASE" --tag "$TAG" "$context" >&2 || die "the image build failed (above)"
echo "$TAG"
