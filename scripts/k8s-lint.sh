#!/usr/bin/env bash
# Offline checks of everything that deploys Provenant to Kubernetes (`make lint-k8s`):
#   1. helm lint --strict of helm/provenant with each values file (default, values-production.yaml,
#      ci/*.yaml);
#   2. helm template of each into kubernetes-validate --strict against the oldest Kubernetes
#      the chart supports and the current one; the bundled NATS server's rendered configuration
#      checked by nats-server -t;
#   3. every rendered service configuration's keys checked against that service's base.yaml (the
#      services refuse unknown keys); the plain manifests under k8s/ regenerated from the chart
#      and compared (no drift);
#   4. kubectl kustomize of every kustomization under k8s/, validated the same way;
#   5. the alerting rules rendered with values-production.yaml through promtool check rules and
#      the alert unit tests in helm/alert-tests.yaml (promtool test rules);
#   6. checkov over every rendering and the Dockerfile, with .checkov.yaml (waivers with reasons).
# kubernetes-validate has schemas for built-in kinds only: custom resources (ServiceMonitor,
# PrometheusRule from the Prometheus Operator, KEDA's ScaledObject) are reported as not
# schema-validated; any other kind without a schema fails the run. checkov still checks them.
# Tools come from scripts/bootstrap.sh --k8s (project-local, pinned).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM=.tools/k8s/bin/helm
KUBECTL=.tools/k8s/bin/kubectl
VALIDATE=.tools/kv-venv/bin/kubernetes-validate
CHECKOV=.tools/checkov-venv/bin/checkov
NATS_SERVER=.tools/venv/bin/nats-server
PROMTOOL=.tools/prometheus/usr/bin/promtool
CHART=helm/provenant
# The chart's minimum (Chart.yaml kubeVersion) and the version helm and kubectl 1.35 speak.
K8S_VERSIONS=${K8S_VERSIONS:-"1.29.0 1.35.0"}
# Custom resources kubernetes-validate has no schema for (checked by checkov only).
CRD_KINDS="ServiceMonitor PrometheusRule ScaledObject"

for tool in "$HELM" "$KUBECTL" "$VALIDATE" "$CHECKOV" "$NATS_SERVER" "$PROMTOOL"; do
  [ -x "$tool" ] || { echo "missing $tool: run scripts/bootstrap.sh --k8s --promtool" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
unvalidated=()

# Validates the manifests in file $2 against every version; $1 names them in messages. (A file,
# not a pipe: kubernetes-validate reads its input once per version.)
validate() {
  local name=$1 file=$2 output kind status=0 version
  local -a versions=()
  for version in $K8S_VERSIONS; do versions+=(-k "$version"); done
  output=$("$VALIDATE" --strict --quiet "${versions[@]}" "$file") || status=$?
  # Lines: "WARN <file> Couldn't find schema for kind <Kind> with api version <v> for kubernetes version <k>".
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    case "$line" in
      "WARN $file Couldn't find schema for kind "*)
        kind=${line#"WARN $file Couldn't find schema for kind "}
        kind=${kind%% *}
        if [[ " $CRD_KINDS " == *" $kind "* ]]; then
          [[ " ${unvalidated[*]:-} " == *" $name:$kind "* ]] || unvalidated+=("$name:$kind")
        else
          echo "$name: no schema for kind $kind (a typo in apiVersion or kind?)" >&2
          status=1
        fi
        ;;
      *) echo "$name: $line" >&2 ;;
    esac
  done <<<"$output"
  if [ "$status" -ne 0 ]; then
    echo "$name: kubernetes-validate failed" >&2
    return 1
  fi
}

values_files=(default "$CHART/values-production.yaml")
for file in "$CHART"/ci/*.yaml; do values_files+=("$file"); done

log "helm lint --strict; helm template into kubernetes-validate --strict (Kubernetes $K8S_VERSIONS)"
for values in "${values_files[@]}"; do
  if [ "$values" = default ]; then args=(); name=chart-default; else args=(-f "$values"); name=chart-$(basename "$values" .yaml); fi
  "$HELM" lint --strict --quiet "$CHART" --namespace provenant "${args[@]}" >"$work/lint.log" 2>&1 \
    || { cat "$work/lint.log" >&2; echo "helm lint failed for $name" >&2; exit 1; }
  "$HELM" template provenant "$CHART" --namespace provenant "${args[@]}" >"$work/$name.yaml"
  validate "$name" "$work/$name.yaml"
  echo "  $name: $(grep -c '^kind:' "$work/$name.yaml") resources" >&2
done

log "nats-server -t on the bundled NATS configuration"
for name in chart-default chart-values-production; do
  [ -f "$work/$name.yaml" ] || continue
  .tools/kv-venv/bin/python - "$work/$name.yaml" "$work/$name-nats.conf" <<'EOF'
import sys, yaml
for document in yaml.safe_load_all(open(sys.argv[1])):
    if document and document["kind"] == "ConfigMap" and "nats.conf" in document.get("data", {}):
        open(sys.argv[2], "w").write(document["data"]["nats.conf"])
EOF
  [ -f "$work/$name-nats.conf" ] || { echo "$name: no NATS configuration rendered" >&2; exit 1; }
  grep -q '^  sync_interval: always$' "$work/$name-nats.conf" || { echo "$name: NATS without sync_interval: always" >&2; exit 1; }
  SERVER_NAME=provenant-nats-0 NATS_USER=lint NATS_PASSWORD=lint "$NATS_SERVER" -t -c "$work/$name-nats.conf" >/dev/null 2>"$work/nats.log" \
    || { cat "$work/nats.log" >&2; echo "$name: nats-server rejects the configuration" >&2; exit 1; }
done

log "promtool check rules and test rules (helm/alert-tests.yaml) on the rendered alerting rules"
.tools/kv-venv/bin/python - "$work/chart-values-production.yaml" "$work/rules.yaml" <<'EOF'
import sys, yaml
for document in yaml.safe_load_all(open(sys.argv[1])):
    if document and document["kind"] == "PrometheusRule":
        yaml.safe_dump({"groups": document["spec"]["groups"]}, open(sys.argv[2], "w"))
EOF
[ -f "$work/rules.yaml" ] || { echo "chart-values-production: no PrometheusRule rendered" >&2; exit 1; }
"$PROMTOOL" check rules "$work/rules.yaml" >"$work/promtool.log" 2>&1 || { cat "$work/promtool.log" >&2; exit 1; }
cp helm/alert-tests.yaml "$work/alert-tests.yaml"
"$PROMTOOL" test rules "$work/alert-tests.yaml" >"$work/promtool.log" 2>&1 || { cat "$work/promtool.log" >&2; exit 1; }
echo "  $(grep -c -- '- alert:' "$work/rules.yaml") alerting rules checked; their unit tests pass" >&2

log "rendered service configuration against each service's configuration/base.yaml"
# The services refuse unknown keys (serde deny_unknown_fields): every key the chart renders must be
# one the service's base.yaml has, or one of the optional keys in OPTIONAL.
.tools/kv-venv/bin/python - "$work"/chart-*.yaml <<'PYTHON'
import sys, yaml
OPTIONAL = {("telemetry", "otlp_endpoint"), ("identity",), ("identity", "api_keys")}
def keys(tree, prefix=()):
    for key, value in tree.items():
        yield prefix + (key,)
        if isinstance(value, dict) and prefix + (key,) not in OPTIONAL:
            yield from keys(value, prefix + (key,))
failed = False
for path in sys.argv[1:]:
    for document in yaml.safe_load_all(open(path)):
        if not document or document["kind"] != "ConfigMap" or "config.yaml" not in document.get("data", {}):
            continue
        component = document["metadata"]["labels"]["app.kubernetes.io/component"]
        service = {"train-worker": "train"}.get(component, component.removeprefix("migrate-"))
        known = set(keys(yaml.safe_load(open(f"services/{service}/configuration/base.yaml"))))
        for key in keys(yaml.safe_load(document["data"]["config.yaml"])):
            if key not in known and key not in OPTIONAL:
                print(f"{path.rsplit('/', 1)[-1]}: {document['metadata']['name']}: {'.'.join(key)} is not in "
                      f"services/{service}/configuration/base.yaml", file=sys.stderr)
                failed = True
sys.exit(1 if failed else 0)
PYTHON

log "k8s/ generated from the chart (scripts/k8s-manifests.py --check)"
HELM=$HELM .tools/kv-venv/bin/python scripts/k8s-manifests.py --check

log "kubectl kustomize into kubernetes-validate --strict"
while IFS= read -r kustomization; do
  directory=$(dirname "$kustomization")
  name=kustomize-$(echo "${directory#k8s/}" | tr '/' '-')
  "$KUBECTL" kustomize "$directory" >"$work/$name.yaml"
  validate "$name" "$work/$name.yaml"
  echo "  $name: $(grep -c '^kind:' "$work/$name.yaml") resources" >&2
done < <(find k8s -name kustomization.yaml | sort)

log "checkov (waivers and their reasons: .checkov.yaml)"
failed=0
for rendered in "$work"/chart-*.yaml "$work"/kustomize-*.yaml; do
  if ! "$CHECKOV" --config-file .checkov.yaml --framework kubernetes -f "$rendered" >"$work/checkov.log" 2>&1; then
    echo "checkov: $(basename "$rendered" .yaml)" >&2
    cat "$work/checkov.log" >&2
    failed=1
  else
    echo "  $(basename "$rendered" .yaml): $(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*' "$work/checkov.log")" >&2
  fi
done
if ! "$CHECKOV" --config-file .checkov.yaml --framework dockerfile -f Dockerfile >"$work/checkov.log" 2>&1; then
  echo "checkov: Dockerfile" >&2
  cat "$work/checkov.log" >&2
  failed=1
else
  echo "  Dockerfile: $(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*' "$work/checkov.log")" >&2
fi
[ "$failed" = 0 ] || exit 1

if [ ${#unvalidated[@]} -gt 0 ]; then
  echo "not schema-validated (custom resources, no schema offline; checked by checkov): ${unvalidated[*]}" >&2
fi
log "lint-k8s passed"
