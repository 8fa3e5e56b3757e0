#!/usr/bin/env bash
# One virtualenv per peer under benchmarks/peers/.venvs/ (idempotent: a
# finished one carries a stamp and is left alone; a half-made one is redone).
# relperf_tf itself runs from the project's .venv (`make setup`).
#   TORCH_SPEC   the torch requirement (default torch==2.13.0, a CPU build on
#                the project's machines; elsewhere add TORCH_INDEX)
#   TORCH_INDEX  e.g. https://download.pytorch.org/whl/cpu for a CPU build
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

make_venv() {  # name, then the install commands run inside it
    local name=$1 dir=.venvs/$1
    shift
    if [ -f "$dir/.stamp" ]; then echo "$name: ready"; return; fi
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/pip" install --quiet --upgrade pip
    ( PIP="$dir/bin/pip"; eval "$@" )
    touch "$dir/.stamp"
    echo "$name: installed"
}

make_venv performer_pytorch \
    '$PIP install --quiet "$TORCH_SPEC" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} && $PIP install --quiet -r requirements-performer_pytorch.txt'
make_venv model_garden \
    '$PIP install --quiet -r requirements-model_garden.txt && $PIP install --quiet --no-deps tf-models-official==2.20.0'
