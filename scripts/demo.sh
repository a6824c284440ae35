#!/usr/bin/env bash
# make demo: the whole product on a fresh clone, no token and no network: the bundled BatchData
# sandbox on loopback answers; samples/leads.csv runs end to end, then again from the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

export CONVEXA_IGNORE_DOTENV=1
export SQLITE_DB_PATH="${DEMO_DB:-data/demo.db}"
unset DATABASE_URL
PORT_SANDBOX="$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export BATCHDATA_BASE_URL="http://127.0.0.1:${PORT_SANDBOX}"
export BATCHDATA_API_TOKEN="demo-sandbox-token-0000"
export LOG_LEVEL="${LOG_LEVEL:-warning}"

echo "== migrating ${SQLITE_DB_PATH}"
$PY manage.py migrate --noinput -v0

echo "== starting the BatchData sandbox on ${BATCHDATA_BASE_URL} (0.3 s latency per request)"
$PY manage.py batchdata_sandbox --port "$PORT_SANDBOX" --latency 0.3 --token "$BATCHDATA_API_TOKEN" >data/demo-sandbox.log 2>&1 &
SANDBOX_PID=$!
trap 'kill $SANDBOX_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  $PY -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $PORT_SANDBOX)))" && break
  sleep 0.1
done

echo "== run 1: samples/leads.csv (100 leads, some duplicates, some bad rows)"
$PY manage.py skiptrace_run samples/leads.csv --label "demo $(date +%H:%M:%S)" --wait

echo
echo "== run 2: the same file again (served from the cache: no provider call, no cost)"
$PY manage.py skiptrace_run samples/leads.csv --label "demo re-run $(date +%H:%M:%S)" --wait
