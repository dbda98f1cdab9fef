"""Landing -> sessions and landing -> daily load latency under the daemon, or under `dagster dev`.

    uv run python bench/latency.py [--files 50] [--every 2.0] [--meters 2000] [--dev] [--push]

Starts `dagster-daemon run -w workspace.yaml` (with --dev: `dagster dev -w workspace.yaml`, the
webserver and the daemon, as `make ui` does) on a fresh instance and SQLite warehouse under
data/bench/latency/ with EV_FEED_SENSOR_INTERVAL_S=1 and EV_LOAD_SENSOR_INTERVAL_S=1, waits for the
reference run, then lands simulated feed files one by one (written elsewhere, renamed into the
landing folder, as the agent's writer does; with --push: each file's payload POSTed to
`ev-awareness receive` over HTTP, the clock starting at its 202 answer, when the payload is durable),
and polls the warehouse every 0.5 s:

- sessions visible: the file is in the file ledger (ev_feed_files) and its batch is paired
  (ev_batch_pairing);
- daily load visible: the end of the first daily_load_job run that started after that pairing and
  succeeded (the instance's run records): the sensor asks for every day queued at its tick.

Prints p50/p95/max of both over the files, and the machine's contention, as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import measure  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between two landed files")
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up waiting after this many seconds")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="run under `dagster dev` (webserver + daemon) instead of `dagster-daemon run`",
    )
    parser.add_argument(
        "--push", action="store_true", help="deliver each payload through `ev-awareness receive` over HTTP"
    )
    parser.add_argument(
        "--port", type=int, default=18300, help="--dev: the webserver's port; --push: the receiver's is the next one"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the daemon on the way out (finally)

    import dagster as dg
    import polars as pl
    import sqlalchemy as sa

    from ev_assets.core.reference_extracts import write_reference_extracts
    from ev_assets.synthetic import simulator, utility

    folder = PROJECT / "data" / "bench" / "latency"
    shutil.rmtree(folder, ignore_errors=True)
    staging, landing, home = folder / "staging", folder / "landing", folder / "dagster_home"
    for path in (staging, landing, home):
        path.mkdir(parents=True)
    frames = utility.generate_utility(meters=args.meters, seed=7)
    write_reference_extracts(frames, folder / "reference")
    simulator.simulate_to_folder(frames, staging, date(2024, 6, 3), 2, 7)
    # From the evening of the first day on: starts and ends, so sessions complete and load changes.
    files = sorted(staging.glob("ev_*.json"))
    files = files[len(files) // 2 - args.files // 2 :][: args.files]
    db = folder / "ev.sqlite"
    env = dict(os.environ)
    env.update(
        EV_FEED_DIR=str(landing),
        EV_REFERENCE_DIR=str(folder / "reference"),
        EV_WAREHOUSE_URL=f"sqlite:///{db}",
        DAGSTER_HOME=str(home),
        EV_FEED_SENSOR_INTERVAL_S="1",
        EV_LOAD_SENSOR_INTERVAL_S="1",
        EV_PARTITIONS_START="2010-01-01",
        PYTHONPYCACHEPREFIX=str(PROJECT / "data" / "bench" / "pycache"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    bindir = Path(sys.executable).parent
    subprocess.run([str(bindir / "ev-awareness"), "init"], env=env, cwd=PROJECT, check=True, capture_output=True)
    # The instance's storage is created here, before the daemon starts: two processes creating it
    # at once can stamp its schema twice.
    instance = dg.DagsterInstance.from_config(str(home))
    instance.get_runs(limit=1)
    log = (folder / "daemon.log").open("w")
    workspace = str(PROJECT / "workspace.yaml")
    command = (
        [str(bindir / "dagster"), "dev", "-w", workspace, "-h", "127.0.0.1", "-p", str(args.port)]
        if args.dev
        else [str(bindir / "dagster-daemon"), "run", "-w", workspace]
    )
    daemon = subprocess.Popen(
        command, env=env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    receiver = _start_receiver(env, landing, args.port + 1, folder) if args.push else None
    engine = sa.create_engine(f"sqlite:///{db}")
    contention = measure.Contention()
    try:
        deadline = time.monotonic() + args.timeout
        while not _scalar(engine, "SELECT count(*) FROM ref_meters"):  # the reference run first
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"no reference load (daemon log: {folder / 'daemon.log'})")
            time.sleep(0.5)
        if args.dev:
            _wait_http(f"http://127.0.0.1:{args.port}/server_info", deadline, daemon, folder / "daemon.log")
        landed: dict[str, float] = {}
        seen: dict[str, float] = {}
        loaded: dict[str, float] = {}
        next_land = time.monotonic()
        while len(loaded) < len(files) and time.monotonic() < deadline:
            if len(landed) < len(files) and time.monotonic() >= next_land:
                src = files[len(landed)]
                if receiver is not None:
                    # The receiver names the file it made durable; its 202 is the acknowledgement.
                    answer = receiver.post(src.read_bytes())
                    landed[answer["file"]] = time.time()
                else:
                    tmp = landing / f".{src.name}.tmp"
                    shutil.copyfile(src, tmp)
                    tmp.rename(landing / src.name)
                    landed[src.name] = time.time()
                next_land += args.every
            now = time.time()
            paired = _rows(
                engine,
                "SELECT f.file_name, p.paired_at FROM ev_feed_files f "
                "JOIN ev_batch_pairing p ON p.batch_id = f.batch_id",
            )
            loads = _load_runs(instance)
            for name, paired_text in paired:
                if name not in landed:
                    continue
                seen.setdefault(name, now)
                paired_at = datetime.fromisoformat(str(paired_text)).replace(tzinfo=UTC).timestamp()
                done = [end for start, end in loads if start >= paired_at]
                if name not in loaded and done:
                    loaded[name] = min(done)
            time.sleep(0.5)
    finally:
        if receiver is not None:
            receiver.stop()
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        engine.dispose()
        instance.dispose()
    load = contention.stop()
    sessions = [seen[n] - landed[n] for n in seen]
    daily = [loaded[n] - landed[n] for n in loaded]
    result = {
        "under": "dagster dev" if args.dev else "dagster-daemon run",
        "delivery": "HTTP push to ev-awareness receive (clock from the 202)"
        if args.push
        else "file renamed into the landing folder",
        "files": len(files),
        "every_s": args.every,
        "sessions_visible": len(sessions),
        "load_visible": len(daily),
        "sessions_p50_s": percentile(sessions, 0.5) if sessions else None,
        "sessions_p95_s": percentile(sessions, 0.95) if sessions else None,
        "sessions_max_s": max(sessions) if sessions else None,
        "load_p50_s": percentile(daily, 0.5) if daily else None,
        "load_p95_s": percentile(daily, 0.95) if daily else None,
        "load_max_s": max(daily) if daily else None,
        "mean_sessions_s": statistics.fmean(sessions) if sessions else None,
        "contention": load,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    del pl
    print(json.dumps(result))
    return 0 if len(daily) == len(files) else 1


class _Receiver:
    """`ev-awareness receive` on 127.0.0.1 into the landing folder, and an HTTP client for it."""

    TOKEN = "latency-bench-token-0123456789"

    def __init__(self, process: subprocess.Popen, base: str):
        import httpx

        self.process, self.base = process, base
        self.client = httpx.Client(headers={"Authorization": f"Bearer {self.TOKEN}"}, timeout=30)

    def post(self, body: bytes) -> dict:
        answer = self.client.post(
            f"{self.base}/ev-charging-events", content=body, headers={"Content-Type": "application/json"}
        )
        answer.raise_for_status()
        return answer.json()

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _start_receiver(env: dict, landing: Path, port: int, folder: Path) -> _Receiver:
    from ev_assets.receiver.auth import token_hash

    receiver_env = {
        **env,
        "EV_FEED_DIR": str(landing),
        "EV_RECEIVER_TOKEN_SHA256S": token_hash(_Receiver.TOKEN),
        "EV_RECEIVER_RATE_PER_S": "0",
    }
    log = (folder / "receiver.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ev-awareness"), "receive", "--host", "127.0.0.1", "--port", str(port)],
        env=receiver_env,
        cwd=PROJECT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _wait_http(f"http://127.0.0.1:{port}/health", time.monotonic() + 60, process, folder / "receiver.log")
    return _Receiver(process, f"http://127.0.0.1:{port}")


def _wait_http(url: str, deadline: float, process: subprocess.Popen, log: Path) -> None:
    """Until `url` answers 200 (the receiver, or dagster dev's webserver)."""
    import httpx

    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: its process exited (log: {log})")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer (log: {log})")


def _load_runs(instance) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of the daily-load runs that succeeded."""
    import dagster as dg

    records = instance.get_run_records(dg.RunsFilter(job_name="daily_load_job", statuses=[dg.DagsterRunStatus.SUCCESS]))
    return [(r.start_time, r.end_time) for r in records if r.start_time and r.end_time]


def _scalar(engine, sql: str):
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    except sa.exc.OperationalError:  # tables not there yet, or locked for a moment
        return None


def _rows(engine, sql: str) -> list:
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)).all())
    except sa.exc.OperationalError:
        return []


if __name__ == "__main__":
    sys.exit(main())
