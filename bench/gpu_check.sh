#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): digitq's default recipe with KERAS_BACKEND=jax on one GPU,
# from MNIST in memory, in under 5 minutes; one table on stdout, and $OUT/gpu_check.json.
#
# The GPU machine has JAX (0.11, CUDA 13), NumPy, h5py, ml-dtypes, absl-py, rich and packaging, but
# no TensorFlow, no Keras and no network, and ../shared is not copied there. So, once, in the
# checkout's root on the development machine (.mnist/ and .whl/ are in .gitignore):
#
#   mkdir -p .mnist && cp ../shared/data/mnist/*-ubyte.gz .mnist/          # the 4 files, 11.6 MB
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
#       -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0                  # 2.9 MB
#
# keras 3.15's Requires-Dist is absl-py, numpy, rich, namex, h5py, optree, ml-dtypes, packaging:
# only namex (pure Python) and optree (a compiled wheel, hence the cp312/manylinux flags) are
# missing there; optree's own need, typing-extensions, is there. Then, from the session whose
# checkout this is, one device call (the tree, .mnist and .whl come to about 16 MB):
#
#   run(command="bash bench/gpu_check.sh", carry=[".mnist", ".whl"], timeout_s=330)
#
# and give the machine back afterwards. Arguments go to gpu_check.py (e.g. --quick for a smoke
# run, --budget-s). Anywhere with JAX and Keras, `python bench/gpu_check.py --quick`
# runs the same code on the CPU (tests/unit/test_gpu_check.py does).
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# gpu_check.py stops itself within --budget-s (240 s); this is the backstop inside the 5 minutes.
exec timeout -k 5 285 python3 bench/gpu_check.py "$@"
