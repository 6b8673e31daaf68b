#!/usr/bin/env bash
# How mmjax installs, checked in a fresh venv each (CI runs both after the test suite: .ci/run).
#
#   bash scripts/install_check.sh lower   # exactly pyproject.toml's lower bounds (scripts/lower_bounds.py), then
#                                         # the smoke (scripts/smoke.py) in at most 90 s
#   bash scripts/install_check.sh keep    # a runtime that already has an older jax (KEEP_JAX, default 0.9.2:
#                                         # within the bounds, older than the newest served here) installs mmjax as
#                                         # docs/devices.md says, pinning the jax it has; jax must not change, and
#                                         # the smoke passes
#
# VENV (default /tmp/mmjax-install-MODE) is made anew. Each step says what it checks; any failure exits non-zero.
set -euo pipefail
mode=${1:?usage: install_check.sh lower|keep}
cd "$(dirname "$0")/.."
root=$PWD
venv=${VENV:-/tmp/mmjax-install-$mode}
SMOKE_LIMIT=${SMOKE_LIMIT:-90}
start=$SECONDS
python3 -m venv --clear "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip
installed() {  # the installed version of each package named
    "$py" -c 'import importlib.metadata as m, sys; print(" ".join(m.version(n) for n in sys.argv[1:]))' "$@"
}
case $mode in
lower)
    constraints="$venv/lower-bounds.txt"
    python3 scripts/lower_bounds.py >"$constraints"
    echo "install_check lower: $(tr '\n' ' ' <"$constraints")"
    # non-editable: the smoke runs the installed package, as a user's would be
    "$py" -m pip install -q -c "$constraints" ".[torch]"
    # each dependency is at its bound exactly (pip could not have picked another under the constraints, but say so)
    "$py" - "$constraints" <<'EOF'
import importlib.metadata, sys
release = lambda v: tuple(int(p) for p in v.split("+")[0].split(".")) + (0,) * (4 - v.count("."))  # 4.60 is 4.60.0
wrong = [(name, want, importlib.metadata.version(name)) for name, want in
         (line.strip().split("==") for line in open(sys.argv[1]) if line.strip())
         if release(importlib.metadata.version(name))[:4] != release(want)[:4]]
assert not wrong, f"not at the lower bound: {wrong}"
EOF
    ;;
keep)
    keep=${KEEP_JAX:-0.9.2}
    "$py" -m pip install -q "jax==$keep" "jaxlib==$keep"
    before=$(installed jax jaxlib)
    # the install line of docs/devices.md (and of the notebook's install cell): mmjax, and the jax already there
    "$py" -m pip install -q ".[torch]" "jax==$("$py" -c 'import jax; print(jax.__version__)')"
    after=$(installed jax jaxlib)
    if [ "$before" != "$after" ]; then
        echo "install_check keep: FAILED: installing mmjax changed jax, jaxlib from $before to $after" >&2
        exit 1
    fi
    echo "install_check keep: jax, jaxlib stayed $after"
    ;;
*)
    echo "usage: install_check.sh lower|keep" >&2
    exit 2
    ;;
esac
echo "install_check $mode: installed in $((SECONDS - start)) s"
# from outside the checkout, so that the installed mmjax is the one imported
cd "$venv"
timeout -s KILL "$SMOKE_LIMIT" "$py" "$root/scripts/smoke.py" || {
    status=$?
    [ $status = 137 ] && echo "install_check $mode: FAILED: the smoke took over $SMOKE_LIMIT s" >&2
    exit $status
}
