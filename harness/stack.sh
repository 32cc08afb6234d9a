#!/usr/bin/env bash
# Start, inspect or stop the control plane by hand:
#   bash harness/stack.sh start [--minimal] [--state DIR]   (prints the KUBECONFIG to export)
#   bash harness/stack.sh status | logs | stop [--state DIR]
# Build the binaries first with: bash harness/build.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
exec "$python" -m harness.stack "$@"
