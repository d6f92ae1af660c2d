#!/usr/bin/env bash
# Runs every benchmark and prints the figures quoted in docs/PERFORMANCE.md.
# Loopback only, bounded in time (about 6 minutes after the release build).
# scale_out needs PostgreSQL and Redis (KDC_TEST_POSTGRES_URL, KDC_TEST_REDIS_URL;
# defaults 127.0.0.1:5432 user postgres, 127.0.0.1:6379), psql and redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  (apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null
fi
echo "== KDC: one service-ticket exchange over HTTP"
cargo bench -q -p kdc-e2e --bench tgs_exchange -- 5000 2>/dev/null | tail -n 4
echo "== KDC: failed pre-auth, wrong password vs unknown name"
cargo bench -q -p kdc-e2e --bench preauth_timing -- 3000 2>/dev/null | tail -n 4
echo "== auth-middleware: one validation (criterion)"
cargo bench -q -p auth-middleware --bench validate -- validate/ 2>/dev/null | grep -E "^validate/|time:"
echo "== client-sdk: per-request client cost (criterion)"
cargo bench -q -p client-sdk --bench per_request 2>/dev/null | grep -E "^client/|time:"
echo "== hello service throughput with and without the layer (wrk)"
cargo bench -q -p kdc-e2e --bench hello_throughput -- 3 2>/dev/null | tail -n 4
echo "== scale-out: service tickets on SQLite, PostgreSQL, two KDCs; replay cache in memory vs Redis"
cargo build -q --release -p kdc-server
cargo bench -q -p kdc-e2e --bench scale_out -- 6 2>/dev/null | sed -n '/^scale_out:/,$p'
echo "== criterion medians"
for d in target/criterion/*/new; do
  [ -f "$d/estimates.json" ] || continue
  python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); print("median %-45s %8.2f µs" % (sys.argv[2], e["median"]["point_estimate"]/1000))' \
    "$d/estimates.json" "$(basename "$(dirname "$d")")"
done
