#!/usr/bin/env bash
# Runs a command with the services the tests need, started here and torn down afterwards:
#   - nats-server 2.15.1 (from .tools/venv) on a free port with a temporary store:
#     PV_TEST_NATS_URL, and PV_NATS_SERVER for tests that start their own;
#   - PostgreSQL: PV_TEST_POSTGRES_URL as given, or a throwaway cluster (initdb) on a
#     free port, removed afterwards.
# It never touches the machine's own NATS or PostgreSQL.
# With --nats-only as the first argument, no PostgreSQL is started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
with_postgres=1
if [ "${1:-}" = "--nats-only" ]; then with_postgres=0; shift; fi

free_port() { scripts/free-ports; }
wait_for_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1 after 10 s" >&2
  return 1
}

scratch=$(mktemp -d -t provenant-test-XXXXXX)
chmod 755 "$scratch"
nats_pid=""
pg_ctl=""
pg_data=""
pg_user=""
cleanup() {
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null && wait "$nats_pid" 2>/dev/null || true
  if [ -n "$pg_ctl" ]; then
    if [ -n "$pg_user" ]; then runuser -u "$pg_user" -- "$pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1 || true
    else "$pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1 || true; fi
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT INT TERM

export PV_NATS_SERVER="$root/.tools/venv/bin/nats-server"
nats_port=$(free_port)
"$PV_NATS_SERVER" -a 127.0.0.1 -p "$nats_port" -js -sd "$scratch/nats" -l "$scratch/nats.log" &
nats_pid=$!
wait_for_port "$nats_port"
export PV_TEST_NATS_URL="nats://127.0.0.1:$nats_port"
echo "test NATS $("$PV_NATS_SERVER" --version) at $PV_TEST_NATS_URL" >&2

if [ "$with_postgres" = 1 ] && [ -z "${PV_TEST_POSTGRES_URL:-}" ]; then
  bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
  pg_ctl="$bin/pg_ctl"
  pg_data="$scratch/postgres"
  pg_port=$(free_port)
  run_as=()
  if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses to run as root: the cluster belongs to the postgres (or nobody) user.
    pg_user=postgres
    id -u postgres >/dev/null 2>&1 || pg_user=nobody
    run_as=(runuser -u "$pg_user" --)
  fi
  mkdir -p "$pg_data"
  [ -n "$pg_user" ] && chown "$pg_user" "$pg_data"
  "${run_as[@]}" "$bin/initdb" -D "$pg_data" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
  # fsync off: a throwaway test cluster trades durability for speed.
  "${run_as[@]}" "$pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w \
    -o "-p $pg_port -k $pg_data -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  export PV_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
  echo "test PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $PV_TEST_POSTGRES_URL" >&2
fi

# The allocator settings the services run with (model::backend::GLIBC_TUNABLES): tests that
# train models take the same path, and faster.
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456}"
"$@"
