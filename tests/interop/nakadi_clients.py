"""Drives a Sluice server with real Nakadi clients nobody here wrote: pyNakadi (a
requests wrapper over the whole API) and clin (Zalando's infrastructure-as-code CLI).

usage: nakadi_clients.py URL WORKDIR CLIN_EXECUTABLE
Exits non-zero with a message on the first broken expectation.
"""
import json
import os
import subprocess
import sys
import uuid

from pyNakadi import NakadiClient, NakadiException

url, work, clin = sys.argv[1], sys.argv[2], sys.argv[3]


def check(cond, what):
    if not cond:
        sys.exit(f"interop: {what}")
    print(f"ok: {what}")


# --- pyNakadi -------------------------------------------------------------------
client = NakadiClient(token="unused", nakadi_url=url)
schema = {
    "type": "object",
    "properties": {"sku": {"type": "string"}, "amount": {"type": "integer"}},
    "required": ["sku", "amount"],
}
event_type = {
    "name": "interop.price",
    "owning_application": "pricing",
    "category": "business",
    "enrichment_strategies": ["metadata_enrichment"],
    "partition_strategy": "hash",
    "partition_key_fields": ["sku"],
    "default_statistic": {"messages_per_minute": 10, "message_size": 100,
                          "read_parallelism": 2, "write_parallelism": 2},
    "schema": {"type": "json_schema", "schema": json.dumps(schema)},
}
check(client.create_event_type(event_type) is True, "pyNakadi creates an event type (201)")
got = client.get_event_type("interop.price")
check(got["schema"]["version"] == "1.0.0", "pyNakadi reads it back with schema version 1.0.0")
check(any(e["name"] == "interop.price" for e in client.get_event_types()), "pyNakadi lists it")
events = [
    {"sku": f"sku-{i % 3}", "amount": i,
     "metadata": {"eid": str(uuid.uuid4()), "occurred_at": "2026-11-22T10:00:00Z"}}
    for i in range(10)
]
client.post_events("interop.price", events)
print("ok: pyNakadi publishes 10 events (200)")
try:
    client.post_events("interop.price", [{"sku": 1}])
    check(False, "an invalid event is refused")
except NakadiException as e:
    check(e.code == 422, "pyNakadi sees 422 for an invalid event")
partitions = client.get_event_type_partitions("interop.price")
check(len(partitions) == 2, "pyNakadi sees 2 partitions (from default_statistic)")
newest = [p["newest_available_offset"] for p in partitions]
check(all(isinstance(o, str) for o in newest), "partitions carry Nakadi-style offsets")
got["options"] = {"retention_time": 3_600_000}
client.update_event_type("interop.price", got)
check(client.get_event_type("interop.price")["options"]["retention_time"] == 3_600_000,
      "pyNakadi updates the event type (200)")

# A consumer: subscription, stream, commits, stats (pyNakadi decodes the chunked stream
# itself from the socket).
sub = client.create_subscription({"owning_application": "search", "event_types": ["interop.price"],
                                  "read_from": "begin"})
check(len(sub["id"]) == 36, "pyNakadi creates a subscription")
stream = client.get_subscription_events_stream(sub["id"], batch_limit=5, batch_flush_timeout=1,
                                               stream_limit=10, max_uncommitted_events=100)
seen = []
for raw in stream:
    batch = json.loads(raw)
    seen += [e["amount"] for e in batch.get("events", [])]
    if "events" in batch:
        client.commit_subscription_cursors(sub["id"], stream.get_stream_id(), [batch["cursor"]])
    if len(seen) == 10:
        break
stream.close()
check(sorted(seen) == list(range(10)), "pyNakadi streams all 10 events and commits each batch (204)")
stats = client.get_subscription_stats(sub["id"], show_time_lag=True)
left = sum(p["unconsumed_events"] for et in stats["items"] for p in et["partitions"])
check(left == 0, "the stats show nothing left unconsumed")
cursors = client.get_subscription_cursors(sub["id"])["items"]
check(len(cursors) == 2 and all(c["offset"].startswith("001-0001-") for c in cursors),
      "pyNakadi reads the committed cursors")
client.delete_subscription(sub["id"])
print("ok: pyNakadi deletes the subscription (204)")
check(client.delete_event_type("interop.price") is True, "pyNakadi deletes it (200)")

# --- clin -----------------------------------------------------------------------
with open(os.path.join(work, ".clin"), "w") as f:
    f.write(f"environments:\n  local:\n    nakadi_url: {url}\n")
manifest = os.path.join(work, "stock.yaml")
with open(manifest, "w") as f:
    f.write("""kind: event-type
spec:
  name: interop.stock
  category: data
  owningApplication: inventory
  audience: company-internal
  partitioning:
    strategy: hash
    keys: [sku]
    partitionCount: 3
  cleanup:
    policy: delete
    retentionTimeDays: 2
  schema:
    compatibility: forward
    jsonSchema:
      type: object
      properties:
        sku: {type: string}
        quantity: {type: integer}
      required: [sku, quantity]
  auth:
    services:
      admins: [inventory]
      readers: [inventory]
      writers: [inventory]
""")


def run_clin(*args):
    r = subprocess.run([clin, *args], cwd=work, capture_output=True, text=True)
    print(r.stdout, r.stderr, sep="\n")
    return r


r = run_clin("apply", "-e", "local", "-X", manifest)
check(r.returncode == 0, "clin apply creates a data event type")
stock = NakadiClient(token="unused", nakadi_url=url).get_event_type("interop.stock")
check(stock["category"] == "data" and stock["partition_count"] == 3, "clin's event type is as declared")
check(stock["options"]["retention_time"] == 2 * 86_400_000, "clin's retention is kept")
r = run_clin("apply", "-e", "local", "-X", manifest)
check(r.returncode == 0, "clin apply again is a no-op")
with open(manifest) as f:
    text = f.read()
with open(manifest, "w") as f:
    f.write(text.replace("quantity: {type: integer}", "quantity: {type: integer}\n        warehouse: {type: string}"))
r = run_clin("apply", "-e", "local", "-X", manifest)
check(r.returncode == 0, "clin apply evolves the schema")
stock = NakadiClient(token="unused", nakadi_url=url).get_event_type("interop.stock")
check(stock["schema"]["version"] == "1.1.0", "the new optional field is a minor version")
r = run_clin("dump", "-e", "local", "interop.stock")
check(r.returncode == 0 and "warehouse" in r.stdout, "clin dump reads the event type back")
print("interop: all checks passed")
