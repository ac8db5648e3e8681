# Sourced by scripts/demo.sh and scripts/load.sh: ports, API keys and starting `provenant up`.

services=(ingest validate train infer settle)
declare -A port


# A free port per service and one for the embedded NATS server, exported as configuration.
choose_ports() {
  local chosen
  read -r -a chosen <<<"$("$(dirname "${BASH_SOURCE[0]}")/free-ports" $((${#services[@]} + 1)))"
  for index in "${!services[@]}"; do
    port[${services[$index]}]=${chosen[$index]}
    export "PROVENANT_HTTP__${services[$index]^^}_PORT=${chosen[$index]}"
  done
  PROVENANT_NATS__EMBEDDED_PORT=${chosen[${#services[@]}]}
  export PROVENANT_NATS__EMBEDDED_PORT
}

# A new API key; only its SHA-256 goes into the configuration (key_entry).
new_key() { python3 -c 'import secrets; print("pvk_" + secrets.token_hex(32))'; }
key_entry() { printf '    - principal: %s\n      roles: [%s]\n      key_sha256: %s\n' "$1" "$2" "$(printf %s "$3" | sha256sum | cut -d' ' -f1)"; }

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# start_suite BINARY DATA_DIR: runs `BINARY up` in the background (log in DATA_DIR/provenant.log),
# sets $pid, stops it on exit, and waits until every service is ready.
start_suite() {
  # glibc's allocator settings for model work (model::backend::GLIBC_TUNABLES), as the images set.
  export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456}"
  "$1" up --data-dir "$2" >"$2/provenant.log" 2>&1 &
  pid=$!
  trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
  for service in "${services[@]}"; do
    local url="http://127.0.0.1:${port[$service]}/health/ready"
    for attempt in $(seq 1 300); do
      if curl -fsS "$url" >/dev/null 2>&1; then break; fi
      if ! kill -0 "$pid" 2>/dev/null; then echo "provenant exited; see $2/provenant.log" >&2; tail -20 "$2/provenant.log" >&2; exit 1; fi
      [ "$attempt" = 300 ] && { echo "$service never became ready" >&2; exit 1; }
      sleep 0.1
    done
    printf '%-9s %s  ready: %s\n' "$service" "http://127.0.0.1:${port[$service]}" "$(curl -fsS "$url")"
  done
}

# stop_suite: SIGTERM, and wait for a clean exit (consumers finish their batch, NATS flushes).
stop_suite() {
  kill -TERM "$pid"
  wait "$pid"
  trap - EXIT
}
