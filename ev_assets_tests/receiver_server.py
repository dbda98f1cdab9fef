"""A real receiver (`ev-awareness receive`) in a subprocess on 127.0.0.1, for the tests."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from ev_assets.receiver.auth import token_hash

TOKEN = "test-token-0123456789"
OTHER_TOKEN = "another-token-abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_receiver(landing: Path, **env: str):
    """Yield (base URL, process); the process is killed afterwards if still running."""
    port = free_port()
    environment = {
        **os.environ,
        "EV_FEED_DIR": str(landing),
        "EV_RECEIVER_TOKEN_SHA256S": f"{token_hash(TOKEN)},{token_hash(OTHER_TOKEN)}",
        "EV_RECEIVER_RATE_PER_S": "0",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "ev_assets.cli", "receive", "--host", "127.0.0.1", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    tls = "EV_RECEIVER_TLS_CERT" in env
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=env["EV_RECEIVER_TLS_CERT"]) if tls else True
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"receiver exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1, verify=verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("receiver did not start")
            time.sleep(0.05)
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)
        process.stderr.close()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
