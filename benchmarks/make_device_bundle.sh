#!/usr/bin/env bash
# Build .devbundle/site.tar.xz: Ray 2.60.0, the trainers' packages (SB3, rsl_rl) for Python 3.12 on x86-64,
# for a GPU machine that has PyTorch but no Ray and no network (the lent device machines).
# What that machine already has (numpy, pandas, pyarrow, grpcio, aiohttp, ...) is left out,
# and so are Ray's Java jars, RLlib and test folders, to stay under the 64 MiB it may receive.
#   bash benchmarks/make_device_bundle.sh && bash benchmarks/gpu_check.sh   # the latter on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
download=(python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp
          "${platforms[@]}" -d "$work/wheels")
"${download[@]}" "ray[default,tune]==2.60.0" "optuna==5.0.0" "gymnasium==1.4.0" "tabulate==0.10.0" \
  "jsonschema==4.26.0"
"${download[@]}" --no-deps "stable-baselines3==2.9.2"
# rsl_rl's real runner (Isaac Lab's default RL library) for the Isaac-Lab-style GPU sweep.
"${download[@]}" --no-deps "rsl-rl-lib==5.5.1" "tensordict==0.15.3" "pyvers==0.2.3" "GitPython==3.2.1" \
  "gitdb==4.0.12" "smmap==5.0.3"
already_there="aiohappyeyeballs aiohttp aiosignal attrs certifi charset_normalizer click cloudpickle filelock
  frozenlist fsspec grpcio idna markupsafe msgpack multidict numpy packaging pandas prometheus_client propcache
  protobuf pyarrow python_dateutil pyyaml requests six tabulate tqdm typing_extensions urllib3 wrapt yarl"
for name in $already_there; do rm -f "$work/wheels/${name}"-[0-9]*.whl; done
python3 -m pip install --quiet --no-deps --no-compile --target "$work/devsite" --python-version 3.12 \
  --implementation cp --only-binary=:all: "${platforms[@]}" "$work"/wheels/*.whl
rm -rf "$work/devsite/ray/jars" "$work/devsite/ray/rllib" "$work/devsite/bin"
find "$work/devsite" -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} +
mkdir -p .devbundle
tar cf - -C "$work" devsite | xz -T0 -6 > .devbundle/site.tar.xz
ls -l .devbundle/site.tar.xz
