"""The live service's loop: follow the landing folder, read each new file into the live state,
and run the publishers.

The landing folder is polled (EV_LIVE_POLL_INTERVAL_S) and new `*.json` files are read in name
order: the receiver names its files `stream-<UTC time>-<uuid>.json`, so name order is arrival
order, and its temporaries (`.tmp-*`) are never listed. Which files were read is the state file's
(live_files), never memory's: a restart reads on from there.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ev_assets.core import feed
from ev_assets.live.messages import LiveRules
from ev_assets.live.processor import FileOutcome, Processor, ReferenceReader
from ev_assets.live.publishers import MqttConfig, MqttPublisher, WebhookSender
from ev_assets.live.store import MQTT_CURSOR, LiveStore, webhook_cursor

log = logging.getLogger("ev_assets.live")

# Files read in one transaction at most: what landed since the last look, in one pass (the
# contract's cost is mostly per call), bounded so a backlog commits (and publishes) as it goes.
FILES_PER_TRANSACTION = 200


@dataclass(frozen=True)
class LiveConfig:
    landing_dir: Path
    state_path: Path
    warehouse_url: str | None
    rules: LiveRules
    mqtt: MqttConfig
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str = ""
    webhook_max_backoff_s: float = 60.0
    poll_interval_s: float = 0.15
    sweep_interval_s: float = 30.0

    @classmethod
    def from_settings(cls, settings=None) -> LiveConfig:
        from ev_assets.pipeline.config import PipelineSettings
        from ev_assets.settings import Settings

        s = settings or Settings()
        p = PipelineSettings.from_settings(s)
        rules = LiveRules(
            timezone=p.timezone,
            bounds=p.bounds,
            max_session=p.max_session,
            charge_w_tolerance=p.charge_w_tolerance,
            power_factor=p.power_factor,
            planning_threshold=p.planning_threshold,
            base_load_pu=p.base_load_pu,
            base_load_scale=p.base_load_scale,
            hysteresis=s.live_alert_hysteresis,
            topic_prefix=s.mqtt_topic_prefix,
        )
        return cls(
            landing_dir=Path(s.feed_dir),
            state_path=Path(s.live_state_path),
            warehouse_url=s.warehouse_url,
            rules=rules,
            mqtt=MqttConfig(
                host=s.mqtt_host,
                port=s.mqtt_port,
                client_id=s.mqtt_client_id,
                username=s.mqtt_username,
                password=s.mqtt_password,
            ),
            webhook_urls=tuple(u.strip() for u in s.live_webhook_urls.split(",") if u.strip()),
            webhook_secret=s.live_webhook_secret,
            webhook_max_backoff_s=s.live_webhook_max_backoff_s,
            poll_interval_s=s.live_poll_interval_s,
            sweep_interval_s=s.live_sweep_interval_s,
        )


class LiveService:
    def __init__(self, config: LiveConfig):
        self.config = config
        self.stop = threading.Event()

    def run(self, *, skip_existing: bool = False) -> None:
        cfg = self.config
        if cfg.webhook_urls and not cfg.webhook_secret:
            raise SystemExit("EV_LIVE_WEBHOOK_URLS is set but EV_LIVE_WEBHOOK_SECRET is empty: webhooks must be signed")
        store = LiveStore(cfg.state_path)
        reference = ReferenceReader(cfg.warehouse_url)
        consumers = (MQTT_CURSOR, *(webhook_cursor(url) for url in cfg.webhook_urls))
        processor = Processor(store, reference, cfg.rules, consumers)
        if skip_existing:
            self._skip_existing(store)
        # Bring the state up to now (time-outs, the hour's base load), then queue every retained
        # message again behind whatever still waits in the outbox: the broker ends on the current state.
        processor.warm_up()
        processor.sweep()
        republished = processor.republish()
        wakes = [threading.Event()]
        threads: list[threading.Thread] = [MqttPublisher(cfg.state_path, cfg.mqtt, wakes[0], self.stop)]
        for url in cfg.webhook_urls:
            wakes.append(threading.Event())
            threads.append(
                WebhookSender(cfg.state_path, url, cfg.webhook_secret, cfg.webhook_max_backoff_s, wakes[-1], self.stop)
            )
        for thread in threads:
            thread.start()
        log.info(
            "live: following %s, state %s, MQTT %s:%s (%d retained messages queued again), %d webhook(s)",
            cfg.landing_dir,
            cfg.state_path,
            cfg.mqtt.host,
            cfg.mqtt.port,
            republished,
            len(cfg.webhook_urls),
        )

        def notify() -> None:
            for wake in wakes:
                wake.set()

        notify()
        try:
            self._follow(store, processor, notify)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(10)
            reference.close()
            store.close()

    def _follow(self, store: LiveStore, processor: Processor, notify) -> None:
        cfg = self.config
        landing = cfg.landing_dir
        present = _payload_names(landing)
        # Only the names still in the folder are kept in memory (the pipeline archives files).
        done = store.processed_file_names() & present
        last_sweep = time.monotonic()
        while not self.stop.is_set():
            present = _payload_names(landing)
            done &= present
            waiting = sorted(present - done)
            for first in range(0, len(waiting), FILES_PER_TRANSACTION):
                if self.stop.is_set():
                    return
                outcomes = read_files(
                    store, processor, [landing / n for n in waiting[first : first + FILES_PER_TRANSACTION]]
                )
                done.update(o.name for o in outcomes if o.status != "missing")
                notify()
            if time.monotonic() - last_sweep >= cfg.sweep_interval_s:
                if processor.sweep():
                    notify()
                last_sweep = time.monotonic()
            self.stop.wait(cfg.poll_interval_s)

    def _skip_existing(self, store: LiveStore) -> None:
        """Mark the files already in the folder as read, unpublished (a first start beside a
        landing folder full of history: a control system needs what happens from now on)."""
        done = store.processed_file_names()
        now = datetime.now(UTC)
        names = sorted(_payload_names(self.config.landing_dir) - done)
        with store.transaction():
            for name in names:
                store.mark_file(
                    name, None, "skipped", {}, "present when the live service started with --skip-existing", now
                )
        log.info("live: %d file(s) already in the landing folder skipped", len(names))


def read_files(store: LiveStore, processor: Processor, paths: list[Path]) -> list[FileOutcome]:
    """Read the files in one transaction; should that fail for a reason of their own (a bug a
    file trips, not the state file: sqlite3 errors stop the service), read them one by one and
    set aside the one that fails, marked `failed` with its error, so one file cannot stop the
    live view for every transformer. Its transaction rolled back: nothing of it was published."""
    try:
        return processor.process_files(paths)
    except sqlite3.Error:
        raise
    except Exception:
        if len(paths) > 1:
            return [outcome for path in paths for outcome in read_files(store, processor, [path])]
        log.exception("%s: could not be read; set aside as failed, not published", paths[0].name)
        with store.transaction():
            store.mark_file(
                paths[0].name, None, "failed", {}, "the live service failed on it: see its log", datetime.now(UTC)
            )
        return [FileOutcome(paths[0].name, "failed")]


def _payload_names(landing: Path) -> set[str]:
    if not landing.is_dir():
        return set()
    return {path.name for path in landing.glob(feed.FEED_GLOB) if path.is_file()}


def run_service(settings=None, *, skip_existing: bool = False) -> None:
    """`ev-awareness live`: run until SIGTERM or SIGINT."""
    service = LiveService(LiveConfig.from_settings(settings))

    def stop(_signum, _frame) -> None:
        service.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.run(skip_existing=skip_existing)
