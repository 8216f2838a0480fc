#!/usr/bin/env bash
# fractofl and its pinned dependencies into the virtual environment VENV (`make setup`).
# With uv where it can be installed: it unpacks torch's CUDA wheels (4 GiB with the nvidia-*
# libraries) in parallel, about 60 s against pip's 130 s on a 2-core machine (README). uv
# gets this machine's pip configuration (indexes, find-links, constraints; see
# uv_args_from_pip.py) and chooses among all indexes as pip does. Where uv cannot be
# installed, or fails (a setting of pip's it has no twin for, such as pip's own proxy),
# pip installs.
set -euo pipefail
venv=${1:?usage: install-python.sh VENV}
python=$venv/bin/python
here=$(dirname "$0")

install_with_uv() {
    "$python" -m pip install --quiet uv || return 1
    local listed
    listed=$("$python" "$here/uv_args_from_pip.py" "$python") || return 1
    local options=()
    [[ -n $listed ]] && mapfile -t options <<<"$listed"
    # --compile-bytecode: every process would otherwise compile what it imports (this
    # environment may set PYTHONDONTWRITEBYTECODE, and the suite starts hundreds)
    "$venv/bin/uv" pip install --quiet --python "$python" --compile-bytecode \
        --index-strategy unsafe-best-match "${options[@]}" -e ".[dev]"
}

if ! install_with_uv; then
    echo "note: installing with uv did not work (above); installing with pip (slower)" >&2
    "$python" -m pip install --quiet --upgrade pip
    "$python" -m pip install --quiet -e ".[dev]"
fi
