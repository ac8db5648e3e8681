#!/usr/bin/env python3
"""Writes the plain manifests under k8s/ from the Helm chart, so the two never drift.

    scripts/k8s-manifests.py            regenerate the generated files under k8s/
    scripts/k8s-manifests.py --check    fail if they differ from what the chart renders (make lint-k8s)

The chart is rendered with k8s/render-values.yaml as release "provenant" in namespace
"provenant", then split: the ordinary resources into k8s/base/<component>.yaml, the training
workers into k8s/overlays/gpu/, KEDA's ScaledObject and the NATS policy that admits KEDA into
k8s/overlays/gpu-keda/, the migration hook Jobs (hook annotations removed) into k8s/migrations/.
Helm's own labels and config checksums are dropped. The kustomization.yaml files are written by
hand and are not touched here. Runs with any Python that has PyYAML (the kubernetes-validate venv
has it).
"""

import argparse
import difflib
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELM = os.environ.get("HELM", os.path.join(ROOT, ".tools/k8s/bin/helm"))
CHART = os.path.join(ROOT, "helm/provenant")
VALUES = os.path.join(ROOT, "k8s/render-values.yaml")
HEADER = (
    "# Generated from helm/provenant by scripts/k8s-manifests.py (values: k8s/render-values.yaml).\n"
    "# Do not edit: change the chart and regenerate, or patch in an overlay.\n"
)
HOOK_ANNOTATIONS = ("helm.sh/hook", "helm.sh/hook-weight", "helm.sh/hook-delete-policy")


def render(*extra):
    command = [HELM, "template", "provenant", CHART, "--namespace", "provenant", "-f", VALUES, *extra]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def strip_helm(labels):
    if labels:
        labels.pop("helm.sh/chart", None)
        labels.pop("app.kubernetes.io/managed-by", None)


def clean(document):
    metadata = document["metadata"]
    strip_helm(metadata.get("labels"))
    annotations = metadata.get("annotations") or {}
    for key in HOOK_ANNOTATIONS:
        annotations.pop(key, None)
    if not annotations:
        metadata.pop("annotations", None)
    template = document.get("spec", {}).get("template")
    if isinstance(template, dict) and "metadata" in template:
        strip_helm(template["metadata"].get("labels"))
        template_annotations = template["metadata"].get("annotations") or {}
        template_annotations.pop("checksum/config", None)
        if not template_annotations:
            template["metadata"].pop("annotations", None)
    return document


def is_hook(document):
    return "helm.sh/hook" in (document["metadata"].get("annotations") or {})


def component(document):
    return (document["metadata"].get("labels") or {}).get("app.kubernetes.io/component")


class Dumper(yaml.SafeDumper):
    pass


def _string(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _string)


def dump(documents):
    body = "---\n".join(yaml.dump(d, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=1000) for d in documents)
    return HEADER + body


def generated_files():
    plain = render("--set", "trainWorker.enabled=true")
    keda = render("--set", "trainWorker.enabled=true", "--set", "trainWorker.keda.enabled=true")
    files = {}

    def add(path, document):
        files.setdefault(path, []).append(clean(document))

    for document in plain:
        name = component(document)
        if is_hook(document):
            add("k8s/migrations/migrations.yaml", document)
        elif name == "train-worker":
            add("k8s/overlays/gpu/train-worker.yaml", document)
        elif name in (None,):
            add("k8s/base/common.yaml", document)
        else:
            add(f"k8s/base/{name}.yaml", document)
    for document in keda:
        if document["kind"] == "ScaledObject":
            add("k8s/overlays/gpu-keda/scaledobject.yaml", document)
        elif document["kind"] == "NetworkPolicy" and component(document) == "nats":
            add("k8s/overlays/gpu-keda/networkpolicy-nats.yaml", document)
    return {path: dump(documents) for path, documents in sorted(files.items())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if k8s/ differs from the chart's rendering")
    arguments = parser.parse_args()
    files = generated_files()
    stale = []
    for path, text in files.items():
        full = os.path.join(ROOT, path)
        current = open(full).read() if os.path.exists(full) else None
        if current == text:
            continue
        if arguments.check:
            stale.append(path)
            sys.stdout.writelines(difflib.unified_diff((current or "").splitlines(True), text.splitlines(True), path, f"{path} (from the chart)"))
        else:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as handle:
                handle.write(text)
            print(f"wrote {path}")
    # A generated file the chart no longer produces.
    for directory in ("k8s/base", "k8s/overlays/gpu", "k8s/overlays/gpu-keda", "k8s/migrations"):
        for entry in sorted(os.listdir(os.path.join(ROOT, directory))) if os.path.isdir(os.path.join(ROOT, directory)) else []:
            path = f"{directory}/{entry}"
            if entry != "kustomization.yaml" and path not in files and open(os.path.join(ROOT, path)).read().startswith(HEADER):
                if arguments.check:
                    stale.append(path)
                else:
                    os.remove(os.path.join(ROOT, path))
                    print(f"removed {path}")
    if stale:
        print(f"k8s/ is out of date with helm/provenant ({', '.join(stale)}): run scripts/k8s-manifests.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
