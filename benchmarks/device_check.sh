#!/usr/bin/env bash
# The one check to run on a lent GPU machine: numerics of the stock kernels there against
# the XLA:CPU kernels on the CPU, the ViT-B bfloat16 step's clips/s and MFU with XLA's and
# cuDNN's attention, and the demo end to end; one table, in at most 8 minutes.
#
#   bash benchmarks/device_check.sh [--workdir=DIR] [--batch=N]
#   bash benchmarks/device_check.sh --cpu-smoke     # toy sizes on the CPU: checks the script
#
# What each row means: benchmarks/device_check.py. Python: $PYTHON, else .venv's, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONUNBUFFERED=1
# 450 s for the checks (the demo gets what is left), then the 8-minute hard stop.
exec timeout --kill-after=10 480 "$python" benchmarks/device_check.py --budget_s=450 "$@"
