#!/usr/bin/env bash
# fractofl and its pinned dependencies into the virtual environment VENV (`make setup`).
# With uv where it can be installed: it unpacks torch's CUDA wheels (4 GiB with the nvidia-*
# libraries) in parallel, about 60 s against pip's 130 s on a 2-core machine (README). uv
# gets this machine's pip configuration (indexes, find-links, constraints; see
# uv_args_from_pip.py) and chooses among all indexes as pip does. Without uv, pip installs.
set -euo pipefail
venv=${1:?usage: install-python.sh VENV}
python=$venv/bin/python
here=$(dirname "$0")

if "$python" -m pip install --quiet uv; then
    mapfile -t uv_options < <("$python" "$here/uv_args_from_pip.py" "$python")
    # --compile-bytecode: every process would otherwise compile what it imports (this
    # environment may set PYTHONDONTWRITEBYTECODE, and the suite starts hundreds)
    exec "$venv/bin/uv" pip install --quiet --python "$python" --compile-bytecode \
        --index-strategy unsafe-best-match "${uv_options[@]}" -e ".[dev]"
fi
echo "note: uv could not be installed; installing with pip (slower)" >&2
"$python" -m pip install --quiet --upgrade pip
exec "$python" -m pip install --quiet -e ".[dev]"
