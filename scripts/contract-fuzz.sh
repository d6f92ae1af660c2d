#!/usr/bin/env bash
# Contract fuzzing: schemathesis generates requests from openapi.yaml (valid
# and invalid ones) against a real KDC on loopback and checks every answer
# against the spec: no 5xx, only documented statuses, content types, headers
# and bodies (`--checks all`). The admin API is fuzzed with a real admin
# ticket: tests/contract/kdc_hooks.py signs each admin request with
# `tkt header`, bound to its method, path+query and exact body.
#
# Installs its own pinned schemathesis into .venv-contract/ (git-ignored),
# builds the debug `kdc` and `tkt`, starts a KDC with a fresh data directory,
# runs, stops it, and exits non-zero on any failure. Bounded: about a minute
# of fuzzing after the build (CONTRACT_MAX_EXAMPLES cases per operation and
# phase; a hard time limit of CONTRACT_TIME_LIMIT seconds).
#
# Reproduce a run: CONTRACT_SEED=<the seed it printed> scripts/contract-fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

max_examples=${CONTRACT_MAX_EXAMPLES:-300}
time_limit=${CONTRACT_TIME_LIMIT:-240}
venv=$root/.venv-contract
requirements=$root/tests/contract/requirements.txt

# Install (or reuse) the pinned fuzzer. The stamp is the requirements file
# itself, so a version bump reinstalls.
if ! cmp -s "$requirements" "$venv/requirements.installed" 2>/dev/null; then
  echo "== contract fuzzing: installing schemathesis ($(grep '^schemathesis==' "$requirements"))"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$requirements"
  cp "$requirements" "$venv/requirements.installed"
fi

echo "== contract fuzzing: building kdc and tkt"
${CONTRACT_CARGO:-cargo} build --quiet --bin kdc --bin tkt  # CONTRACT_CARGO: e.g. a wrapper that takes a build lock
kdc=$root/target/debug/kdc
tkt=$root/target/debug/tkt

work=$(mktemp -d)
kdc_pid=
cleanup() {
  if [ -n "$kdc_pid" ]; then
    kill "$kdc_pid" 2>/dev/null || true
    wait "$kdc_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A fresh realm: the bootstrap admin (whose password only this run knows), a
# user and a service, so that the generated requests meet real principals.
export KDC_DATA=$work/data KDC_LOG=${KDC_LOG:-warn}
unset KDC_CONFIG KDC_MASTER_KEY KDC_LISTEN KDC_REALM
admin_pw=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
printf '%s\n' "$admin_pw" | "$kdc" init --admin-password-stdin >/dev/null
head -c 18 /dev/urandom | base64 | "$kdc" principal add alice --password-stdin >/dev/null
"$kdc" principal add HTTP/svc.example.test --service >/dev/null

KDC_LISTEN=127.0.0.1:0 "$kdc" serve >"$work/kdc.out" 2>"$work/kdc.err" &
kdc_pid=$!
url=
for _ in $(seq 1 100); do
  url=$(sed -n 's/^kdc serving realm .* on \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$work/kdc.out")
  [ -n "$url" ] && break
  kill -0 "$kdc_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "contract fuzzing: the KDC did not start" >&2
  cat "$work/kdc.err" >&2
  exit 1
fi
echo "== contract fuzzing: KDC at $url"

export TKT_KDC_URL=$url TKT_CACHE=$work/tkt/tickets.json
printf '%s\n' "$admin_pw" | "$tkt" login admin --password-stdin >/dev/null

seed=${CONTRACT_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "== contract fuzzing: schemathesis, seed $seed, $max_examples examples per operation"
status=0
# Run from the scratch directory: schemathesis keeps caches in its working
# directory, and they belong to this run only.
#
# `filter_too_much` is a health check of the generator, not of the API: with
# some seeds, Hypothesis discards many candidate principal names (the
# PrincipalName pattern) for GET /admin/principals/{name} and gives up on the
# operation with an error (seed 1177930530). Suppressing it keeps every
# check of the answers; the operation is then fuzzed with what it generated.
cd "$work"
SCHEMATHESIS_HOOKS=$root/tests/contract/kdc_hooks.py \
  CONTRACT_TKT=$tkt CONTRACT_ADMIN=admin@EXAMPLE.TEST CONTRACT_USER=alice@EXAMPLE.TEST CONTRACT_STATS=$work/stats.json \
  timeout --kill-after=10 "$time_limit" \
  "$venv/bin/schemathesis" run "$root/openapi.yaml" --url "$url" \
  --checks all --max-examples "$max_examples" --seed "$seed" \
  --suppress-health-check filter_too_much \
  --generation-database none --no-color --output-truncate true \
  >"$work/run.txt" 2>&1 || status=$?
cd "$root"

# The report, without the `Authorization` values of its reproductions (long,
# and bound to a KDC that is gone).
sed -E 's/(Authorization: Ticket )[^'"'"']*/\1…/' "$work/run.txt"

if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "contract fuzzing: over the ${time_limit}s limit" >&2
fi
if ! kill -0 "$kdc_pid" 2>/dev/null; then
  echo "contract fuzzing: the KDC died" >&2
  cat "$work/kdc.err" >&2
  status=1
fi

# The signer must really have reached the admin API: signed requests were
# answered, some of them 2xx, and none refused for its ticket or binding
# (that would be a signing bug or a server bug, never the fuzzed input).
cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$work/run.txt" | tail -n1)
if [ ! -s "$work/stats.json" ]; then
  echo "contract fuzzing: no signing statistics" >&2
  status=1
else
  "$venv/bin/python" - "$work/stats.json" "${cases:-0}" <<'EOF' || status=1
import json, sys
s = json.load(open(sys.argv[1]))
stats, refusals = s["stats"], s["signed_refusals"]
print(f"contract fuzzing: {sys.argv[2]} test cases; admin API: {stats.get('signed', 0)} signed requests "
      f"({stats.get('signed_2xx', 0)} answered 2xx, {stats.get('signed_4xx', 0)} 4xx), "
      f"{stats.get('unsigned_admin', 0)} unsigned, {stats.get('unsignable_body', 0)} bodies tkt cannot carry; "
      f"semantic 400s accepted: "
      + (", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(stats.items()) if k.startswith("semantic_400:")) or "none"))
by_op = {}
for key, n in s["statuses"].items():
    op, status = key.rsplit(" ", 1)
    by_op.setdefault(op, []).append(f"{status}×{n}")
for op in sorted(by_op):
    print(f"  {op}: {' '.join(sorted(by_op[op]))}")
ok = True
if stats.get("signed_2xx", 0) == 0:
    print("contract fuzzing: no signed admin request succeeded", file=sys.stderr)
    ok = False
if refusals:
    print(f"contract fuzzing: signed admin requests were refused: {refusals}", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
EOF
fi
if [ -z "$cases" ] || [ "$cases" -eq 0 ]; then
  echo "contract fuzzing: ran no test case" >&2
  status=1
fi
# The closing tally: test cases that passed every check, and unique failures
# plus errors (at least one when anything above failed).
summary=$(grep -E '^ *[0-9]+ generated' "$work/run.txt" | tail -n1 || true)
passed=$(sed -n 's/.* \([0-9][0-9]*\) passed.*/\1/p' <<<"$summary")
failures=$(sed -n 's/.* \([0-9][0-9]*\) unique failures.*/\1/p' <<<"$summary")
errored=$(sed -n 's/.* \([0-9][0-9]*\) errored.*/\1/p' <<<"$summary")
failed=$((${failures:-0} + ${errored:-0}))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "contract: ${passed:-0} passed, $failed failed"
exit "$status"
