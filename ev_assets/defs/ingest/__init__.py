"""Ingest area: landing files -> ev_charging_events -> ev_charging_sessions, split by kind:

- `assets`: the two assets and their checks (declared with them: Dagster runs an asset's checks
  in its step), their run config;
- `jobs`: ingest_job and sessions_job;
- `requests`: what the feed sensor decides (the batches to ingest, the reference load first, the
  pairing a dead run left), as run requests: the sensor and `ev-awareness run` both call these;
- `sensors`: ev_feed_sensor, which only turns those decisions into a tick's result.
"""
