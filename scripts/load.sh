#!/usr/bin/env bash
# `make load`: k6 against the all-in-one release binary (`provenant up`, SQLite, its own NATS
# 2.15.1), then the Rust NATS throughput bench against that same NATS server. JSON results in
# target/load/: ingest.json and infer.json (k6 summaries), bus.json, and results.json with the
# headline figures and each threshold's verdict. Exits non-zero when a threshold fails.
#
# The steps: a Datanet takes contributions at a constant arrival rate (k6, ingest.js); once the
# validator has caught up (its consumer lag, read from /metrics, is zero) the Datanet is sealed
# and a small base model trained on it; then concurrent clients ask it for completions (k6,
# infer.js). Knobs: LOAD_INGEST_RATE (200/s), LOAD_DURATION (30s), LOAD_INFER_VUS (4),
# LOAD_TRAIN_STEPS (60).
set -euo pipefail
cd "$(dirname "$0")/.."

k6=.tools/k6-venv/bin/k6
binary=target/release/provenant
out=target/load
data=.data/load
rm -rf "$data" "$out"
mkdir -p "$data/config" "$out"
# shellcheck source=scripts/suite-lib.sh
source scripts/suite-lib.sh
choose_ports
export RUST_LOG=${RUST_LOG:-warn}

key=$(new_key)
{
  echo "identity:"
  echo "  api_keys:"
  key_entry load "datanet_owner, contributor, model_builder" "$key"
} >"$data/config/local.yaml"
export PROVENANT_CONFIG_DIR="$data/config" PROVENANT_ENVIRONMENT=local
auth=(-H "authorization: Bearer $key")
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "starting $binary up, log in $data/provenant.log"
start_suite "$binary" "$data"
ingest="http://127.0.0.1:${port[ingest]}" validate="http://127.0.0.1:${port[validate]}"
train="http://127.0.0.1:${port[train]}" infer="http://127.0.0.1:${port[infer]}"

datanet=$(curl -fsS "${auth[@]}" -H 'content-type: application/json' "$ingest/v1/datanets" \
  -d '{"name": "load", "licence": "CC0-1.0"}' | json_field datanet_id)
for attempt in $(seq 1 100); do
  curl -fsS "${auth[@]}" "$ingest/v1/datanets/$datanet" >/dev/null 2>&1 && break
  sleep 0.1
done

failed=()
step "k6: contributions at ${LOAD_INGEST_RATE:-200}/s for ${LOAD_DURATION:-30s} (load-tests/k6/ingest.js)"
INGEST_URL=$ingest API_KEY=$key DATANET_ID=$datanet RATE=${LOAD_INGEST_RATE:-200} DURATION=${LOAD_DURATION:-30s} \
  "$k6" run --quiet --no-usage-report --summary-export "$out/ingest.json" load-tests/k6/ingest.js || failed+=(ingest)

# wait_caught_up SERVICE_URL CONSUMER: until the consumer's lag (bus_consumer_pending on the
# service's /metrics) reads zero three times running; prints the seconds it took.
wait_caught_up() {
  local started=$SECONDS caught_up=0 pending
  for attempt in $(seq 1 3000); do
    pending=$(curl -fsS "$1/metrics" | awk -v series="bus_consumer_pending{consumer=\"$2\"}" '$1 == series {print $2}')
    if [ "${pending:-1}" = 0 ]; then caught_up=$((caught_up + 1)); else caught_up=0; fi
    [ "$caught_up" = 3 ] && { echo $((SECONDS - started)); return; }
    sleep 0.2
  done
  echo "consumer $2 never caught up (pending: ${pending:-unknown})" >&2
  exit 1
}

step "waiting for the validator to catch up (bus_consumer_pending on its /metrics)"
validation_lag=$(wait_caught_up "$validate" validate-contributions)
echo "  caught up ${validation_lag} s after the last contribution"
sealed=$(curl -fsS -X POST "${auth[@]}" "$validate/v1/datanets/$datanet/snapshots")
echo "  sealed $(json_field entry_count <<<"$sealed") contributions"

step "training a small base model on the snapshot"
cat >"$data/job.json" <<JSON
{"name": "load-base", "architecture": {"layers": 2, "heads": 4, "width": 64, "context_length": 64},
 "snapshots": [{"snapshot_id": "$(json_field snapshot_id <<<"$sealed")", "merkle_root": "$(json_field merkle_root <<<"$sealed")"}],
 "method": {"type": "full"},
 "hyperparameters": {"steps": ${LOAD_TRAIN_STEPS:-60}, "batch_size": 8, "sequence_length": 64, "learning_rate": 0.003, "warmup_steps": 10},
 "seed": 1, "held_out_fraction": 0.1}
JSON
export PROVENANT_TRAIN_URL=$train PROVENANT_API_KEY=$key
for attempt in $(seq 1 100); do  # the train service learns of the seal from the log
  job=$("$binary" train submit --file "$data/job.json" 2>"$data/submit.err") && break
  grep -q snapshot.not_found "$data/submit.err" || { cat "$data/submit.err" >&2; exit 1; }
  sleep 0.1
done
"$binary" train watch "$job" | tail -1 | sed 's/^/  /'
model=$("$binary" train status "$job" | json_field model_id)
for attempt in $(seq 1 100); do
  curl -fsS -X PUT "${auth[@]}" -H 'content-type: application/json' "$infer/v1/pricing/$model" \
    -d '{"currency":"EUR","exponent":2,"per_request":"10","per_1k_prompt_tokens":"50","per_1k_output_tokens":"200"}' >/dev/null 2>&1 && break
  sleep 0.1
done
for attempt in $(seq 1 100); do
  curl -fsS "${auth[@]}" "$infer/v1/models" | grep -q load-base && break
  sleep 0.1
done

step "k6: ${LOAD_INFER_VUS:-4} concurrent clients asking for completions for ${LOAD_DURATION:-30s} (load-tests/k6/infer.js)"
INFER_URL=$infer API_KEY=$key MODEL=load-base VUS=${LOAD_INFER_VUS:-4} DURATION=${LOAD_DURATION:-30s} \
  "$k6" run --quiet --no-usage-report --summary-export "$out/infer.json" load-tests/k6/infer.js || failed+=(infer)

step "waiting for settlement to catch up"
settlement_lag=$(wait_caught_up "http://127.0.0.1:${port[settle]}" settle-inferences)
ledger_lag=$(wait_caught_up "http://127.0.0.1:${port[settle]}" settle-ledger)
echo "  settled ${settlement_lag} s and booked $((settlement_lag + ledger_lag)) s after the last completion"

step "bus-bench against the suite's NATS server"
target/release/bus-bench --nats-url "nats://127.0.0.1:$PROVENANT_NATS__EMBEDDED_PORT" \
  --messages 20000 --projection-events 10000 --repeats 3 --output "$out/bus.json" >"$data/bus-bench.log"

step "stopping"
stop_suite

python3 - "$out" "${failed[*]:-}" "$(json_field entry_count <<<"$sealed")" "$validation_lag" "$settlement_lag" "$ledger_lag" <<'PY'
import json, sys
out, failed = sys.argv[1], sys.argv[2].split()
sealed, validation_lag, settlement_lag, ledger_lag = map(int, sys.argv[3:7])
def summary(name):
    data = json.load(open(f"{out}/{name}.json"))
    metrics = data["metrics"]
    duration = metrics["http_req_duration"]
    thresholds = {f"{metric} {expression}": not verdict
                  for metric, values in metrics.items()
                  for expression, verdict in values.get("thresholds", {}).items()}
    return {
        "requests": metrics["http_reqs"]["count"],
        "requests_per_second": round(metrics["http_reqs"]["rate"], 1),
        "failed_rate": metrics["http_req_failed"]["value"],
        "latency_ms": {key: round(duration[key], 2) for key in ("med", "p(95)", "p(99)", "max")},
        "thresholds_passed": thresholds,
    }
results = {"ingest": summary("ingest"), "infer": summary("infer"), "bus": json.load(open(f"{out}/bus.json")), "failed": failed}
# How far the asynchronous halves fell behind: seconds from the end of each k6 run until the
# consumer's lag read zero (polled every 0.2 s, so about ±1 s).
results["ingest"]["accepted_and_sealed"] = sealed
results["ingest"]["validation_caught_up_after_seconds"] = validation_lag
results["infer"]["settled_caught_up_after_seconds"] = settlement_lag
results["infer"]["ledger_caught_up_after_seconds"] = settlement_lag + ledger_lag
json.dump(results, open(f"{out}/results.json", "w"), indent=2)
for name in ("ingest", "infer"):
    r = results[name]
    print(f"  {name:<7} {r['requests']} requests, {r['requests_per_second']}/s, failed {r['failed_rate']:.2%}, "
          f"median {r['latency_ms']['med']} ms, p95 {r['latency_ms']['p(95)']} ms, thresholds "
          + ("passed" if all(r["thresholds_passed"].values()) else "FAILED: " + ", ".join(k for k, v in r["thresholds_passed"].items() if not v)))
print(f"  results in {out}/results.json")
PY
[ -z "${failed[*]:-}" ] || { echo "thresholds failed: ${failed[*]}" >&2; exit 1; }
