#!/usr/bin/env bash
# Set up casefile on a fresh Debian machine: system packages (Chromium for the browser tests, a C compiler
# and Python's headers for the compiled hunt modules), venv, package.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v cc >/dev/null 2>&1 || packages+=(gcc libc6-dev)
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
  || packages+=(python3-dev)
if [ "$(id -u)" = 0 ] && [ ${#packages[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${packages[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
.venv/bin/python -c 'import casefile.hunt.engine, casefile.hunt.parallel, casefile.hunt.output
from casefile import native
n = len(native.compiled_modules())
print(f"casefile: {n} hunt modules compiled" if n else "casefile: WARNING: no module compiled (no C compiler?): hunts run about a sixth slower")'
