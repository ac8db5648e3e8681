#!/usr/bin/env python3
"""Demo step: real fortunes as contributions, one contributor per fortune file.

Reads the plan (Datanet id, fortune file and API key of each contributor) from a JSON file,
submits the first N fortunes of each file to the ingest API, lets a copycat resubmit a few of
someone else's, waits for every verdict from the validate service, and prints a summary.
Standard library only; `make demo` runs it.
"""
import collections
import json
import sys
import time
import urllib.error
import urllib.request


def call(method, url, key, body=None, content_type=None):
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("authorization", f"Bearer {key}")
    if content_type:
        request.add_header("content-type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def fortunes(path, count):
    with open(path, encoding="utf-8", errors="replace") as file:
        entries = [entry.strip() for entry in file.read().split("\n%\n")]
    return [entry for entry in entries if entry][:count]


def main():
    ingest, plan_path, per_file = sys.argv[1], sys.argv[2], int(sys.argv[3])
    plan = json.load(open(plan_path))
    submitted = []  # (contribution id, contributor key, label)
    started = time.monotonic()
    for entry in plan["contributors"]:
        texts = fortunes(entry["file"], per_file)
        for text in texts:
            status, answer = call("POST", f"{ingest}/v1/datanets/{entry['datanet']}/contributions", entry["key"],
                                  text.encode("utf-8"), "text/plain; charset=utf-8")
            if status != 202:
                print(f"  unexpected {status}: {answer}", file=sys.stderr)
                continue
            submitted.append((answer["contribution_id"], entry["key"], entry["name"]))
        print(f"  {entry['name']:<22} {len(texts):>3} fortunes from {entry['file']}")
    copycat = plan["copycat"]
    for text in fortunes(copycat["file"], 3):
        status, answer = call("POST", f"{ingest}/v1/datanets/{copycat['datanet']}/contributions", copycat["key"],
                              text.encode("utf-8"), "text/plain; charset=utf-8")
        submitted.append((answer["contribution_id"], copycat["key"], copycat["name"]))
    print(f"  {copycat['name']:<22}   3 fortunes copied from {copycat['file']}")
    print(f"submitted {len(submitted)} contributions in {time.monotonic() - started:.1f} s; waiting for verdicts")

    verdicts = {}
    deadline = time.monotonic() + 120
    while len(verdicts) < len(submitted) and time.monotonic() < deadline:
        for contribution_id, key, name in submitted:
            if contribution_id in verdicts:
                continue
            status, view = call("GET", f"{ingest}/v1/contributions/{contribution_id}", key)
            if status == 200 and view["status"] != "pending":
                verdicts[contribution_id] = (name, view)
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    counts = collections.Counter(view["status"] for _, view in verdicts.values())
    codes = collections.Counter(reason["code"] for _, view in verdicts.values() for reason in view["reasons"])
    print(f"verdicts for {len(verdicts)}/{len(submitted)} after {elapsed:.1f} s: "
          + ", ".join(f"{count} {status}" for status, count in sorted(counts.items())))
    for code, count in codes.most_common():
        print(f"  rejected {count:>3} x {code}")
    joined = [(name, view) for name, view in verdicts.values()
              if view["status"] == "accepted" and view["duplicate_cluster_id"] != view["id"]]
    for name, view in joined[:3]:
        print(f"  {name} joined duplicate cluster {view['duplicate_cluster_id']} (the earliest submitter owns it)")
    if len(verdicts) < len(submitted):
        sys.exit("some contributions never got a verdict")


if __name__ == "__main__":
    main()
