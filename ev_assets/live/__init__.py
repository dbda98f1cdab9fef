"""The live service (`ev-awareness live`): what a control system needs seconds after a push.

It follows the landing folder the receiver writes (every acknowledged payload is a file there
before the 2xx), reads each new file with the pipeline's own pure stages (parse, contract, event
ids, the as-of enrichment, pairing), keeps the open sessions and each transformer's EV load in a
SQLite file of its own, and publishes through a durable outbox: enriched start and end events,
a retained state per transformer, and retained overload alerts, to MQTT 5 (QoS 1) and to signed
HTTP webhooks. The Dagster pipeline stays the system of record; this is a view of it, seconds old.

- `store`: the durable state (files processed, recent events, open sessions, transformer and alert
  state, the outbox, each publisher's cursor): one SQLite transaction per landing file.
- `messages`: topics and payloads, transformer state and the alert rule (pure polars).
- `processor`: a landing file -> events, sessions, state changes and messages.
- `publishers`: the MQTT publisher (sent = PUBACK received) and the webhook senders.
- `service`: the loop that follows the folder and runs the publishers.
"""
