# Sourced by demo.sh and test.sh: installs what they need on a fresh Debian machine.
# Debian's Pushgateway and the packages in $EXTRA_APT from apt (root is needed
# only when one is missing), and a virtual environment in .venv with
# $PIP_FIRST, then this package with the pip extras in $PIP_EXTRAS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# A package counts as present when its command is on PATH (however it was
# installed) or dpkg has it installed; `dpkg -s` alone would also accept a
# removed package whose configuration files remain.
have() {
  command -v "$1" >/dev/null 2>&1 ||
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
need_apt=()
for pkg in prometheus-pushgateway "${EXTRA_APT[@]:-}"; do
  if [ -n "$pkg" ] && ! have "$pkg"; then need_apt+=("$pkg"); fi
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # With its recommends: podman was tested here with them (its container tooling comes that way).
  recommends=(--no-install-recommends)
  case " ${need_apt[*]} " in *" podman "*) recommends=() ;; esac
  apt-get install -y -qq "${recommends[@]}" "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
if [ -n "${PIP_FIRST:-}" ]; then
  # Installed before the package so that its requirements find them satisfied
  # (torch==2.13.0 is a CPU build that pip finds on this kind of machine).
  echo "==> installing $PIP_FIRST into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check $PIP_FIRST
fi
echo "==> installing runai${PIP_EXTRAS:+[$PIP_EXTRAS]} into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${PIP_EXTRAS:+[$PIP_EXTRAS]}"
