#!/usr/bin/env python3
"""Demo step: waits until every contribution of the given contributors has a verdict from the
validate service, then prints a summary (accepted, rejected by reason code, copies that joined
an earlier contributor's duplicate cluster). Standard library only; `make demo` runs it.

Usage: demo_verdicts.py INGEST_URL CONTRIBUTORS_JSON EXPECTED_COUNT
CONTRIBUTORS_JSON is a list of {"name": ..., "key": ...}.
"""
import collections
import json
import sys
import time
import urllib.request


def contributions(ingest, key):
    rows, after = [], None
    while True:
        url = f"{ingest}/v1/contributions?limit=500" + (f"&after={after}" if after else "")
        request = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.load(response)
        rows += page["contributions"]
        after = page.get("next_after")
        if not after:
            return rows


def main():
    ingest, contributors_path, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    contributors = json.load(open(contributors_path))
    started, deadline = time.monotonic(), time.monotonic() + 120
    while True:
        seen = [(person["name"], row) for person in contributors for row in contributions(ingest, person["key"])]
        pending = sum(row["status"] == "pending" for _, row in seen)
        if (len(seen) >= expected and pending == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    counts = collections.Counter(row["status"] for _, row in seen)
    print(f"verdicts for {len(seen) - pending}/{expected} contributions after waiting {time.monotonic() - started:.1f} s: "
          + ", ".join(f"{count} {status}" for status, count in sorted(counts.items())))
    codes = collections.Counter(reason["code"] for _, row in seen for reason in row["reasons"])
    for code, count in codes.most_common():
        print(f"  rejected {count:>3} x {code}")
    joined = [(name, row) for name, row in seen if row["status"] == "accepted" and row["duplicate_cluster_id"] != row["id"]]
    for name, row in joined[:3]:
        print(f"  {name} joined duplicate cluster {row['duplicate_cluster_id']} (the earliest submitter owns it)")
    if len(seen) < expected or pending:
        sys.exit("some contributions never got a verdict")


if __name__ == "__main__":
    main()
