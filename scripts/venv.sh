#!/usr/bin/env bash
# What scripts/bootstrap.sh and scripts/lmms_env.sh share: a virtual environment made once, reinstalled only when
# what it was installed from changes, pip filtered of one noise line. Sourced; needs ROOT.

# install_due VENV LABEL FILE...: makes VENV if it is missing; true (and says so, tagged LABEL) when it was not yet
# installed from the contents of FILE... in this checkout (then install, and call `installed VENV`)
install_due() {
  local venv="$1" label="$2"
  shift 2
  if [ ! -x "$venv/bin/python" ]; then
    echo "[$label] creating virtual environment in $venv"
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  WANT="$(cat "$@" | sha256sum | cut -d' ' -f1) $ROOT"
  if [ "$(cat "$venv/.videoitg-install-stamp" 2>/dev/null)" = "$WANT" ]; then
    return 1
  fi
  echo "[$label] installing dependencies (first run takes a few minutes)"
}

installed() { echo "$WANT" > "$1/.videoitg-install-stamp"; }

# pip_in VENV ARGS...: pip in VENV, pinned by constraints.txt (torch's CPU build: a bare 'torch' would pull several GB
# of CUDA wheels). This machine's extra local indexes make pip warn about every missing folder: that noise is dropped.
pip_in() {
  local venv="$1"
  shift
  "$venv/bin/python" -m pip "$1" -q "${@:2}" 2> >(grep -v '^WARNING: Location' >&2)
}
