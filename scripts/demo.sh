#!/usr/bin/env bash
# `make demo`: brings up the whole suite as one process (`provenant up`: the pinned NATS
# server started by it, every service, SQLite files in .data/demo), checks every service's
# health and readiness, drives the pipeline as far as it exists today (import, validation,
# sealed snapshots, a base model and three LoRA adapters with their attribution indexes, a few
# hundred priced completions each with its attribution receipt, one receipt recomputed by
# `provenant attribution explain`, each fee split by its receipt into the settlement ledger, an
# external producer's answer without a receipt attributed after the fact and its held part paid
# out), and stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

data=.data/demo
rm -rf "$data"
mkdir -p "$data"
# shellcheck source=scripts/suite-lib.sh
source scripts/suite-lib.sh
choose_ports
export RUST_LOG=${RUST_LOG:-info,sqlx=warn,async_nats=warn}

# API keys for this run: the Datanet owner, one contributor per fortune file, and a copycat.
# Only their SHA-256 goes into the configuration.
fortunes=/usr/share/games/fortunes
contributors=(en:art en:computers en:food en:science de:de/computer de:de/anekdoten es:es/arte.fortunes es:es/ciencia.fortunes it:it/computer it:it/definizioni)
key=$(new_key)
builder_key=$(new_key)
finance_key=$(new_key)
declare -A contributor_key
mkdir -p "$data/config"
{
  echo "identity:"
  echo "  api_keys:"
  key_entry demo-owner "contributor, datanet_owner" "$key"
  key_entry demo-builder model_builder "$builder_key"
  key_entry demo-finance finance "$finance_key"
  for entry in "${contributors[@]}" copycat; do
    name=$(basename "${entry#*:}" .fortunes | tr -c 'A-Za-z0-9_\n-' '-')
    [ "$entry" = copycat ] || name="${entry%%:*}-$name"
    contributor_key[$name]=$(new_key)
    key_entry "$name" contributor "${contributor_key[$name]}"
  done
  # An external gateway that reports the inferences it serves itself (README, "External
  # inference producers"); the late-receipt step below plays it.
  # Minute-long settlement periods that close as soon as they end, so that the demo can close
  # one and issue its report (deployments use months, days or hours).
  echo "settlement:"
  echo "  producers:"
  echo "    demo-gateway: [\"*\"]"
  echo "  period: minute"
  echo "  close_grace_seconds: 0"
} >"$data/config/local.yaml"
export PROVENANT_CONFIG_DIR="$data/config" PROVENANT_ENVIRONMENT=local
auth=(-H "authorization: Bearer $key")

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "starting provenant (NATS 2.15.1 + ${services[*]}), log in $data/provenant.log"
start_suite target/debug/provenant "$data"

ingest="http://127.0.0.1:${port[ingest]}"
step "creating one Datanet per fortune language"
declare -A datanet
for language in en de es it; do
  answer=$(curl -fsS -X POST "$ingest/v1/datanets" "${auth[@]}" -H 'content-type: application/json' \
    -d "{\"name\":\"Fortunes ($language)\",\"description\":\"fortune(6) cookies from Debian's fortunes packages\",\"tags\":[\"fortunes\",\"$language\"],\"licence\":\"LicenseRef-debian-fortunes\"}")
  echo "  DatanetCreated is durable: $answer"
  datanet[$language]=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["datanet_id"])' <<<"$answer")
done

step "the ingest read model, fed from JetStream by its durable consumer"
for attempt in $(seq 1 100); do
  listing=$(curl -fsS "${auth[@]}" "$ingest/v1/datanets")
  count=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["datanets"]))' <<<"$listing")
  [ "$count" = 4 ] && break
  sleep 0.1
done
python3 -c '
import json, sys
for d in json.load(sys.stdin)["datanets"]:
    print("  %s  %-16s tags=%s  version=%s" % (d["id"], d["name"], ",".join(d["tags"]), d["version"]))' <<<"$listing"

step "real text: Debian's fortune files imported with provenant datanet import, one contributor per file"
per_file=${DEMO_FORTUNES_PER_FILE:-60}
contributors_json="$data/contributors.json"
submitted=0  # some files hold fewer than $per_file fortunes
echo "[" >"$contributors_json"
for language in en de es it; do
  files=()
  echo "{" >"$data/keys-$language.json"
  for entry in "${contributors[@]}"; do
    [ "${entry%%:*}" = "$language" ] || continue
    path="$fortunes/${entry#*:}"
    stem=$(basename "$path"); stem=${stem%%.*}
    name="$language-$(basename "${entry#*:}" .fortunes | tr -c 'A-Za-z0-9_\n-' '-')"
    files+=("$path")
    printf '"%s": "%s",\n' "$stem" "${contributor_key[$name]}" >>"$data/keys-$language.json"
    printf '{"name": "%s", "key": "%s"},\n' "$name" "${contributor_key[$name]}" >>"$contributors_json"
  done
  sed -i '$ s/,$//' "$data/keys-$language.json"; echo "}" >>"$data/keys-$language.json"
  echo "  $language: ${files[*]##*/}"
  imported=$(target/debug/provenant datanet import --ingest-url "$ingest" --datanet "${datanet[$language]}" \
    --keys "$data/keys-$language.json" --per-file "$per_file" "${files[@]}")
  echo "    $imported"
  submitted=$(( submitted + ${imported%% records*} ))
done
echo "  copycat: the first 3 fortunes of art, copied"
target/debug/provenant datanet import --ingest-url "$ingest" --datanet "${datanet[en]}" \
  --key "${contributor_key[copycat]}" --per-file 3 "$fortunes/art" | sed 's/^/    /'
printf '{"name": "copycat", "key": "%s"}]\n' "${contributor_key[copycat]}" >>"$contributors_json"
python3 scripts/demo_verdicts.py "$ingest" "$contributors_json" "$(( submitted + 3 ))"

step "sealing the English Datanet's snapshot and proving one contribution is in it"
validate="http://127.0.0.1:${port[validate]}"
sealed=$(curl -fsS -X POST "${auth[@]}" "$validate/v1/datanets/${datanet[en]}/snapshots")
echo "  SnapshotSealed: $sealed"
snapshot_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])' <<<"$sealed")
# The first English contributor asks for the proof of their first contribution.
contributor_key=${contributor_key[en-art]}
first=$(curl -fsS -H "authorization: Bearer $contributor_key" "$ingest/v1/contributions?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["contributions"][0]["id"])')
for attempt in $(seq 1 100); do
  proof=$(curl -sS -H "authorization: Bearer $contributor_key" "$validate/v1/snapshots/$snapshot_id/proofs/$first")
  grep -q audit_path <<<"$proof" && break
  sleep 0.1
done
python3 - "$proof" <<'PY'
import hashlib, json, sys
proof = json.loads(sys.argv[1])
# Verify the RFC 6962 audit path here, independently of the service.
node = hashlib.sha256(b"\x00" + proof["leaf"].encode()).digest()
index, last = proof["leaf_index"], proof["tree_size"] - 1
for sibling in map(bytes.fromhex, proof["audit_path"]):
    if index % 2 == 1 or index == last:
        node = hashlib.sha256(b"\x01" + sibling + node).digest()
        while index % 2 == 0 and index != 0:
            index, last = index // 2, last // 2
    else:
        node = hashlib.sha256(b"\x01" + node + sibling).digest()
    index, last = index // 2, last // 2
verdict = "verifies" if node.hex() == proof["merkle_root"] else "DOES NOT verify"
print(f"  entry {proof['leaf_index']} of {proof['tree_size']}: {proof['leaf'][:90]}...")
print(f"  audit path of {len(proof['audit_path'])} hashes {verdict} against root {proof['merkle_root']}")
PY

step "sealing the German, Spanish and Italian snapshots"
declare -A snapshot root
snapshot[en]=$snapshot_id
root[en]=$(json_field merkle_root <<<"$sealed")
for language in de es it; do
  answer=$(curl -fsS -X POST "${auth[@]}" "$validate/v1/datanets/${datanet[$language]}/snapshots")
  snapshot[$language]=$(json_field snapshot_id <<<"$answer")
  root[$language]=$(json_field merkle_root <<<"$answer")
  echo "  $language: ${snapshot[$language]}, $(json_field entry_count <<<"$answer") entries, root ${root[$language]}"
done

# Sizes for 2 cores: a few minutes in all. DEMO_TRAIN_STEPS scales every run.
steps=${DEMO_TRAIN_STEPS:-300}
export PROVENANT_TRAIN_URL="http://127.0.0.1:${port[train]}" PROVENANT_API_KEY=$builder_key
submit() { # spec file → job id; retried while the train service's projection catches up with the seal
  for attempt in $(seq 1 100); do
    if job=$(target/debug/provenant train submit --file "$1" 2>"$data/submit.err"); then echo "$job"; return; fi
    grep -q snapshot.not_found "$data/submit.err" || { cat "$data/submit.err" >&2; exit 1; }
    sleep 0.1
  done
  cat "$data/submit.err" >&2; exit 1
}
step "training a base model on the English snapshot (Burn on the CPU), following its progress events"
cat >"$data/base.json" <<JSON
{"name": "fortunes-en-base", "architecture": {"layers": 2, "heads": 4, "width": 64, "context_length": 64},
 "snapshots": [{"snapshot_id": "${snapshot[en]}", "merkle_root": "${root[en]}"}], "method": {"type": "full"},
 "hyperparameters": {"steps": $steps, "batch_size": 8, "sequence_length": 64, "learning_rate": 0.003, "warmup_steps": 20, "checkpoint_every": 100},
 "seed": 42, "held_out_fraction": 0.1}
JSON
base_job=$(submit "$data/base.json")
target/debug/provenant train watch "$base_job" | sed 's/^/  /'
base_model=$(target/debug/provenant train status "$base_job" | json_field model_id)

step "LoRA adapters on the German, Spanish and Italian snapshots, on the frozen English base"
declare -A adapter_job
for language in de es it; do
  cat >"$data/adapter-$language.json" <<JSON
{"name": "fortunes-$language-lora", "base_model_id": "$base_model",
 "snapshots": [{"snapshot_id": "${snapshot[$language]}", "merkle_root": "${root[$language]}"}],
 "method": {"type": "lora", "rank": 8, "alpha": 16, "targets": ["attention_query", "attention_key", "attention_value", "attention_output", "mlp_up", "mlp_down"]},
 "hyperparameters": {"steps": $(( steps / 2 )), "batch_size": 8, "sequence_length": 64, "learning_rate": 0.01, "warmup_steps": 10},
 "seed": 7, "held_out_fraction": 0.1}
JSON
  adapter_job[$language]=$(submit "$data/adapter-$language.json")
done
for language in de es it; do
  target/debug/provenant train watch "${adapter_job[$language]}" | sed 's/^/  /'
done

step "held-out perplexity: each adapter against the English base, on the adapter's own held-out fortunes"
models=("$base_model")
for language in de es it; do models+=("$(target/debug/provenant train status "${adapter_job[$language]}" | json_field model_id)"); done
for model in "${models[@]}"; do
  metrics=$(curl -fsS -H "authorization: Bearer $builder_key" "$PROVENANT_TRAIN_URL/v1/models/$model/metrics")
  registered=$(curl -fsS -H "authorization: Bearer $builder_key" "$PROVENANT_TRAIN_URL/v1/models/$model")
  python3 - "$registered" "$metrics" <<'PY'
import json, sys
model, metrics = json.loads(sys.argv[1]), json.loads(sys.argv[2])
base = metrics.get("base_held_out_perplexity")
versus = f"   base on the same text {base:8.2f}  ({base / metrics['held_out_perplexity']:.1f}x lower)" if base else ""
print(f"  {model['name']:<20} {model['kind']:<8} held-out perplexity {metrics['held_out_perplexity']:7.2f}{versus}")
print(f"  {'':<20} lineage: {len(model['lineage']['snapshots'])} snapshot(s), {metrics['examples']} examples from {metrics['contributors']} contributors, example table {model['lineage']['example_table_sha256'][:16]}…, weights {model['weights']['sha256'][:16]}…")
PY
done

step "serving: the base and its adapters behind the OpenAI-compatible API, each answer priced and recorded"
serving_started=$(date -u +%s)  # the first settlement period the closing step closes
infer="http://127.0.0.1:${port[infer]}"
builder_auth=(-H "authorization: Bearer $builder_key")
price=$(curl -fsS -X PUT "${builder_auth[@]}" -H 'content-type: application/json' "$infer/v1/pricing/$base_model" \
  -d '{"currency":"EUR","exponent":2,"per_request":"10","per_1k_prompt_tokens":"50","per_1k_output_tokens":"200"}')
echo "  PricingPolicySet (the adapters inherit it): $price"
for attempt in $(seq 1 100); do
  served=$(curl -fsS "${builder_auth[@]}" "$infer/v1/models" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))')
  [ "$served" = 4 ] && break
  sleep 0.1
done
for request in "fortunes-en-base|The best way to" "fortunes-en-base/fortunes-de-lora|Der Computer" \
               "fortunes-en-base/fortunes-es-lora|El arte" "fortunes-en-base/fortunes-it-lora|Il computer"; do
  model=${request%%|*} prompt=${request#*|}
  answer=$(curl -fsS "${builder_auth[@]}" -H 'content-type: application/json' "$infer/v1/completions" \
    -d "{\"model\": \"$model\", \"prompt\": \"$prompt\", \"max_tokens\": 60, \"temperature\": 0.7, \"seed\": 1}")
  explained_request=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["provenant"]["request_id"])' <<<"$answer")
  python3 - "$answer" "$prompt" <<'PY'
import json, sys
answer, prompt = json.loads(sys.argv[1]), sys.argv[2]
record, usage = answer["provenant"], answer["usage"]
fee = record["fee"]
print(f"  {answer['model']}")
print(f"    {prompt!r} -> {answer['choices'][0]['text']!r}")
print(f"    {usage['prompt_tokens']}+{usage['completion_tokens']} tokens, fee {int(fee['minor_units']) / 10 ** fee['exponent']:.2f} {fee['currency']}, InferenceServed {record['event_id']}")
receipt = record.get("receipt")
if receipt:
    shares = ", ".join(f"{share['contributor_id']} {share['share_ppb'] / 1e7:.2f} %" for share in receipt["shares"][:3]) or "none above the noise floor"
    print(f"    receipt: {shares}; base pool {receipt['base_pool_ppb'] / 1e7:.2f} %, verbatim coverage {receipt['span_coverage_ppb'] / 1e7:.1f} %, phrase coverage {receipt.get('phrase_coverage_ppb', 0) / 1e7:.1f} %")
else:
    print("    no receipt (the model has no attribution index)")
PY
done
chunks=$(curl -fsS -N "${builder_auth[@]}" -H 'content-type: application/json' "$infer/v1/chat/completions" \
  -d '{"model": "fortunes-en-base", "messages": [{"role": "user", "content": "Tell me a fortune"}], "max_tokens": 40, "stream": true, "seed": 2}' | grep -c '^data: ')
echo "  a streamed chat completion: $chunks server-sent events, the last one [DONE]"

requests=${DEMO_REQUESTS:-200}
step "$requests more priced and attributed answers across the base and its adapters (4 at a time)"
rm -f "$data/paying-answer.json"
python3 - "$infer" "$builder_key" "$requests" "$data/paying-answer.json" <<'PY'
import json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
infer, key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
models = ["fortunes-en-base", "fortunes-en-base/fortunes-de-lora", "fortunes-en-base/fortunes-es-lora", "fortunes-en-base/fortunes-it-lora"]
prompts = ["A ", "The ", "Der ", "El ", "Il ", "Q: ", "Life ", "Never "]
def ask(number):
    body = json.dumps({"model": models[number % 4], "prompt": prompts[number % len(prompts)], "max_tokens": 32, "temperature": 0.8, "seed": number}).encode()
    request = urllib.request.Request(f"{infer}/v1/completions", body, {"authorization": f"Bearer {key}", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)["provenant"]
started = time.monotonic()
with ThreadPoolExecutor(4) as pool:
    answers = list(pool.map(ask, range(count)))
elapsed = time.monotonic() - started
attributed = sum(1 for answer in answers if answer.get("receipt"))
# The answer whose receipt gives one contributor the largest share, for the evidence step.
paying = sorted((answer for answer in answers if answer.get("receipt") and answer["receipt"]["shares"]),
                key=lambda answer: -answer["receipt"]["shares"][0]["share_ppb"])
print(f"  {count} answers in {elapsed:.1f} s ({count / elapsed:.1f}/s), {attributed} with a receipt, {len(paying)} paying a contributor above the noise floor")
if paying:
    json.dump(paying[0], open(sys.argv[4], "w"))
PY

step "settlement: each fee split by the revenue policy into a double-entry ledger"
settle="http://127.0.0.1:${port[settle]}"
finance_auth=(-H "authorization: Bearer $finance_key")
for attempt in $(seq 1 600); do
  reconciliation=$(curl -fsS "${finance_auth[@]}" "$settle/v1/reconciliation")
  [ "$(json_field ledger_transactions <<<"$reconciliation")" = $(( requests + 5 )) ] && break
  sleep 0.1
done
policy=$(curl -fsS "${builder_auth[@]}" "$settle/v1/revenue-policies/$base_model")
accounts=$(curl -fsS "${finance_auth[@]}" "$settle/v1/ledger/accounts")
statement=$(curl -fsS "${builder_auth[@]}" "$settle/v1/statements/me")
python3 - "$reconciliation" "$policy" "$accounts" "$statement" <<'PY'
import json, sys
reconciliation, policy, accounts, statement = (json.loads(argument) for argument in sys.argv[1:])
parts = ", ".join(f"{part['beneficiary']} {part['share_ppb'] / 1e7:g} %" for part in policy["parts"])
print(f"  revenue policy v{policy['version']} ({policy['source']}): {parts}")
for currency in reconciliation["currencies"]:
    scale = 10 ** currency["exponent"]
    money = lambda key: f"{int(currency[key]) / scale:.2f} {currency['currency']}"
    print(f"  fees in {money('fees_in')} = payable {money('payable')} + pooled {money('pooled')} + held {money('held')}: balanced {currency['balanced']}")
print(f"  {reconciliation['ledger_transactions']} transactions; ledger matches the log: {reconciliation['ledger_matches_log']}, journal matches balances: {reconciliation['journal_matches_balances']}")
for item in accounts["items"]:
    balance = item["balance"]
    print(f"    {item['account']:<58} {int(balance['minor_units']) / 10 ** balance['exponent']:>8.2f} {balance['currency']}")
print(f"  demo-builder's own statement: {[(b['account'], b['balance']['minor_units']) for b in statement['balances']]}")
PY

if [ -s "$data/paying-answer.json" ]; then
  step "the evidence for one payout: contributor <- receipt <- inference <- model <- snapshot <- contributions"
  python3 - "$data/paying-answer.json" "$settle" "$finance_key" "$PROVENANT_TRAIN_URL" "$builder_key" "$validate" "$key" <<'PY'
import hashlib, json, sys, urllib.request, uuid
answer, settle, finance_key, train, builder_key, validate, owner_key = json.load(open(sys.argv[1])), *sys.argv[2:]
def get(url, key):
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)
receipt = answer["receipt"]
share = receipt["shares"][0]
contributor = share["contributor_id"]
# settle names a settlement after its inference event: UUIDv8 of SHA-256("settlement" 0 event id).
digest = bytearray(hashlib.sha256(b"settlement\x00" + answer["event_id"].encode()).digest()[:16])
digest[6] = (digest[6] & 0x0F) | 0x80
digest[8] = (digest[8] & 0x3F) | 0x80
settlement = get(f"{settle}/v1/settlements/{uuid.UUID(bytes=bytes(digest))}", finance_key)
paid = [p for p in settlement["postings"] if p["account"] == f"payable:contributor:{contributor}"]
amount = paid[0]["amount"] if paid else None
print(f"  payout     {contributor}: {int(amount['minor_units']) / 10 ** amount['exponent'] if amount else 0:.4f} {settlement['fee']['currency']} in settlement {settlement['settlement_id']} (policy v{settlement['revenue_policy_version']}, period {settlement['period_id']})")
print(f"  receipt    {receipt['receipt_id']}: {contributor} {share['share_ppb']} ppb of the contributors' part; index {receipt['index_sha256'][:16]}…, method {receipt['method']}")
print(f"  inference  request {answer['request_id']}, InferenceServed {answer['event_id']}, fee {int(settlement['fee']['minor_units']) / 10 ** settlement['fee']['exponent']:.2f} {settlement['fee']['currency']}")
model_id = answer["adapter_model_id"] or answer["model_id"]
model = get(f"{train}/v1/models/{model_id}", builder_key)
print(f"  model      {model['name']} ({model_id}), weights {model['weights']['sha256'][:16]}…, trained by job {model['lineage']['job_id']}")
for pin in model["lineage"]["snapshots"]:
    print(f"  snapshot   {pin['snapshot_id']} of Datanet {pin['datanet_id']}, Merkle root {pin['merkle_root'][:16]}…")
    examples = [example for example in receipt["top_examples"] if example["contributor_id"] == contributor][:3]
    for example in examples:
        proof = get(f"{validate}/v1/snapshots/{pin['snapshot_id']}/proofs/{example['contribution_id']}", owner_key)
        print(f"  contribution {example['contribution_id']} (score {example['score_ppb']} ppb): leaf {proof['leaf_index']} of {proof['tree_size']}, audit path of {len(proof['audit_path'])} hashes")
PY
fi

step "an external gateway's answer without a receipt: settle holds the contributors' part, infer attributes it from the kept transcript, settle pays it out"
# The gateway served the German adapter and answered with three fortunes of its Datanet,
# verbatim (a tenth of the records are held out of training, so one alone might not be in it).
gateway_output=$(python3 - "$fortunes/de/computer" "$per_file" <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
records, current = [], []
for line in text.splitlines():
    if line.strip() == "%":
        records.append("\n".join(current).strip()); current = []
    else:
        current.append(line)
records = [record for record in records if record][: int(sys.argv[2])]
print("\n".join([record for record in records if 80 <= len(record) <= 300][:3]))
PY
)
reported=$(target/debug/provenant inference report --producer demo-gateway --model "$base_model" --adapter "${models[1]}" \
  --prompt "Der Computer" --output "$gateway_output" --fee 250 --caller gateway-customer \
  --nats-url "nats://127.0.0.1:$PROVENANT_NATS__EMBEDDED_PORT")
gateway_request=$(awk '$1 == "request_id" {print $2}' <<<"$reported")
gateway_event=$(awk '$1 == "event_id" {print $2}' <<<"$reported")
echo "  demo-gateway published InferenceServed $gateway_event (request $gateway_request), 2.50 EUR, no receipt; transcript kept"
python3 - "$settle" "$finance_key" "$gateway_event" <<'PY'
import hashlib, json, sys, time, urllib.error, urllib.request, uuid
settle, key, event_id = sys.argv[1:]
def derived(purpose, source):
    digest = bytearray(hashlib.sha256(purpose.encode() + b"\x00" + source.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))
def settlement(settlement_id, wait):
    deadline = time.monotonic() + wait
    while True:
        try:
            request = urllib.request.Request(f"{settle}/v1/settlements/{settlement_id}", headers={"authorization": f"Bearer {key}"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
def show(settled):
    for posting in settled["postings"]:
        amount = posting["amount"]
        print(f"      {posting['account']:<58} {int(amount['minor_units']) / 10 ** amount['exponent']:>+8.2f} {amount['currency']}")
# settle names a settlement after its inference event, and the payout of what it held after it.
settled = settlement(derived("settlement", event_id), 60)
print(f"  settlement {settled['settlement_id']} ({settled['kind']}):")
show(settled)
released = settlement(derived("release", settled["settlement_id"]), 180)
print(f"  then, once infer appended InferenceAttributed, settlement {released['settlement_id']} ({released['kind']}, fee 0):")
show(released)
PY
target/debug/provenant attribution explain "$gateway_request" --nats-url "nats://127.0.0.1:$PROVENANT_NATS__EMBEDDED_PORT" | sed 's/^/  /'

step "closing the settlement periods (minute-long in this demo): each one's settlements fixed, its report issued and reconciled"
datanet_names=$(for language in "${!datanet[@]}"; do printf '%s=Fortunes (%s) ' "${datanet[$language]}" "$language"; done)
python3 - "$settle" "$finance_key" "$serving_started" "$datanet_names" <<'PY'
import datetime, json, re, sys, time, urllib.request
settle, key, started = sys.argv[1], sys.argv[2], int(sys.argv[3])
# "id=Fortunes (en) id=Fortunes (de) …" → {id: name}
datanet_names = dict(re.findall(r"(\S+)=(Fortunes \(\w+\))", sys.argv[4]))
def call(method, path):
    request = urllib.request.Request(f"{settle}{path}", method=method, headers={"authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)
# A period closes once it has ended: wait for the current minute to end.
time.sleep(61 - time.time() % 60)
minute = datetime.datetime.fromtimestamp(started - started % 60, datetime.timezone.utc)
now = datetime.datetime.now(datetime.timezone.utc)
closed = []
while minute + datetime.timedelta(minutes=1) <= now:
    period = call("POST", f"/v1/periods/{minute:%Y-%m-%dT%H%M}/close")
    closed.append(period)
    minute += datetime.timedelta(minutes=1)
for period in closed:
    print(f"  {period['period_id']}: {period['settlement_count']:>4} settlements through stream sequence {period['through_sequence']:>5}, report {period['report_sha256'][:16]}… ({', '.join(a['format'] for a in period['artifacts'])})")
busiest = max(closed, key=lambda period: period["settlement_count"])
report = call("GET", f"/v1/periods/{busiest['period_id']}/reports/json")
for currency in report["currencies"]:
    scale = 10 ** currency["exponent"]
    money = lambda name: f"{int(currency[name]) / scale:.2f}"
    print(f"  report {report['period_id']}: fees in {money('fees_in')} {currency['currency']} = payable {money('payable')} + pooled {money('pooled')} + held {money('held')}")
payouts = sorted((p for p in report["payouts"] if p["account"].startswith("payable:contributor:")), key=lambda p: -int(p["amount"]))[:5]
for payout in payouts:
    print(f"    {payout['account']:<40} {int(payout['amount']) / 10 ** payout['exponent']:>8.4f} {payout['currency']} from {payout['settlements']} settlements")
for datanet in report.get("datanets", []):
    scale = 10 ** datanet["exponent"]
    name = datanet_names.get(datanet["datanet_id"], datanet["datanet_id"])
    print(f"    Datanet {name:<36} {int(datanet['total']) / scale:>8.4f} {datanet['currency']} (owner {int(datanet['owner']) / scale:.4f}, contributors {int(datanet['contributors']) / scale:.4f}) from {datanet['settlements']} settlements")
reconciliation = call("GET", "/v1/reconciliation")
print(f"  {sum(p['settlement_count'] for p in closed)} settlements in {len(closed)} closed periods, {reconciliation['ledger_transactions']} in the ledger; ledger matches the log: {reconciliation['ledger_matches_log']}")
PY

if [ -n "${explained_request:-}" ]; then
  step "provenant attribution explain: one receipt recomputed from the model, its attribution index and the kept transcript"
  target/debug/provenant attribution explain "$explained_request" --nats-url "nats://127.0.0.1:$PROVENANT_NATS__EMBEDDED_PORT" | sed 's/^/  /'
fi

step "a bad request gets a stable error code, not a 500"
curl -sS -X POST "$ingest/v1/datanets" "${auth[@]}" -H 'content-type: application/json' -d '{"name":"","licence":"MIT"}'
echo
curl -sS "$ingest/v1/datanets"   # no API key
echo

step "metrics (Prometheus text) from ingest"
curl -fsS "$ingest/metrics" | grep -E '^bus_' | sed 's/^/  /' || true

step "stopping (SIGTERM): consumers finish their batch, NATS flushes its store"
stop_suite
echo "demo finished; data kept in $data (make clean-data removes it)"
