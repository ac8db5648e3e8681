"""Opens a settlement report's CSV and Parquet renderings in pandas and pyarrow, as a finance
team would, and checks them against each other and the ledger's rules: the same rows and
columns, amounts that are exact integers, and every settlement balancing to zero; with the JSON
report, also that its per-Datanet totals are the evidence rows grouped by Datanet.

usage: read_reports.py REPORT.csv REPORT.parquet EXPECTED_ROWS [REPORT.json]
"""

import json
import os
import sys

import pandas
import pyarrow
import pyarrow.parquet

# One thread each: pyarrow's thread pools can abort the interpreter at exit on small machines
# ("terminate called without an active exception"), which would fail a check that passed.
pyarrow.set_cpu_count(1)
pyarrow.set_io_thread_count(1)

COLUMNS = [
    "period_id", "settlement_id", "kind", "inference_event_id", "request_id", "model_id",
    "revenue_policy_version", "occurred_at", "account", "currency", "exponent", "amount_minor_units",
    "datanet_id",
]


def datanet_totals(frame):
    """{(datanet, currency): [owner, contributors, settlements]} from the evidence rows."""
    totals = {}
    for datanet, currency, account, amount, settlement in zip(
        frame["datanet_id"], frame["currency"], frame["account"], frame["amount_minor_units"], frame["settlement_id"]
    ):
        if not datanet:
            continue
        entry = totals.setdefault((datanet, currency), [0, 0, set()])
        entry[0 if account.startswith("payable:datanet_owner:") else 1] += int(amount)
        entry[2].add(settlement)
    return {key: [owner, contributors, len(settlements)] for key, (owner, contributors, settlements) in totals.items()}


def main(csv_path, parquet_path, expected_rows, json_path=None):
    # Amounts are 128-bit integers written as text: read them as text, sum them as Python ints.
    # An empty Datanet is an empty string, not a missing value.
    from_csv = pandas.read_csv(
        csv_path, dtype={"amount_minor_units": str, "settlement_id": str, "datanet_id": str}, keep_default_na=False
    )
    table = pyarrow.parquet.read_table(parquet_path, use_threads=False)
    from_parquet = table.to_pandas(use_threads=False)
    assert list(from_csv.columns) == COLUMNS, list(from_csv.columns)
    assert table.column_names == COLUMNS, table.column_names
    assert len(from_csv) == len(from_parquet) == table.num_rows == expected_rows, (len(from_csv), table.num_rows, expected_rows)
    assert list(from_csv["amount_minor_units"]) == list(from_parquet["amount_minor_units"])
    for frame in (from_csv, from_parquet):
        sums = {}
        for settlement, amount in zip(frame["settlement_id"], frame["amount_minor_units"]):
            sums[settlement] = sums.get(settlement, 0) + int(amount)
        assert all(total == 0 for total in sums.values()), sums
    if json_path is not None:
        with open(json_path, "rb") as file:
            report = json.load(file)
        stated = {
            (row["datanet_id"], row["currency"]): [int(row["owner"]), int(row["contributors"]), row["settlements"]]
            for row in report.get("datanets", [])
        }
        assert all(int(row["total"]) == int(row["owner"]) + int(row["contributors"]) for row in report.get("datanets", []))
        for frame in (from_csv, from_parquet):
            assert datanet_totals(frame) == stated, (datanet_totals(frame), stated)
    print(f"ok: {expected_rows} rows in CSV (pandas) and Parquet (pyarrow, pandas), every settlement balanced", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    # Every check passed; skip interpreter teardown, where pyarrow's pools have aborted before.
    os._exit(0)
