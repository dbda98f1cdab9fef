"""Client of the vendor's batch-export API ("Get EV Awareness Charging Events").

Flow: OAuth2 client-credentials token (cached until shortly before it expires) -> `POST
{base}/subscriptions/{id}/batch-request` -> poll `GET .../batch-request/{jobId}` with exponential
backoff until "Success" (a failure status or the deadline is an error) -> download the zip ->
each data file becomes a JSON payload file in the landing folder (durable, atomic), which the feed
sensor ingests like any other. Every request carries a correlation id and the subscriber id.

Transient failures (connection errors, 429, 5xx) are retried by tenacity with exponential backoff;
any other 4xx is a `VendorError` at once (retrying a refused request changes nothing).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from ev_assets.receiver.landing import write_durably
from ev_assets.vendor.export_files import zip_payloads

FAILED_STATUSES = {"failed", "failure", "error", "cancelled", "canceled", "expired"}


class VendorError(RuntimeError):
    """The vendor refused a request (4xx), a job failed, or it did not finish by the deadline."""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and (
        exc.response.status_code == 429 or exc.response.status_code >= 500
    )


@dataclass
class VendorClient:
    base_url: str
    subscription_id: str
    subscriber_id: str
    token_url: str
    client_id: str
    client_secret: str
    timeout_s: float = 60.0
    attempts: int = 5
    verify: bool = True
    _token: tuple[str, float] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    token_fetches: int = 0

    def __post_init__(self) -> None:
        self._http = httpx.Client(timeout=self.timeout_s, verify=self.verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VendorClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- transport ------------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs) -> httpx.Response:
        for attempt in Retrying(
            retry=retry_if_exception(_transient),
            wait=wait_exponential(multiplier=0.5, max=30),
            stop=stop_after_attempt(self.attempts),
            reraise=True,
        ):
            with attempt:
                answer = self._http.request(method, url, **kwargs)
                if answer.status_code == 429 or answer.status_code >= 500:
                    answer.raise_for_status()
                if answer.status_code == 401 and "headers" in kwargs and "Authorization" in kwargs["headers"]:
                    self._token = None  # expired early: the next attempt fetches a new one
                if answer.status_code >= 400:
                    raise VendorError(f"{method} {url} answered {answer.status_code}: {answer.text[:300]}")
                return answer
        raise AssertionError("unreachable")

    def access_token(self) -> str:
        """The cached token, or a new one (client credentials) when it is within 60 s of expiry."""
        with self._lock:
            if self._token and self._token[1] > time.monotonic() + 60:
                return self._token[0]
            answer = self._send(
                "POST",
                self.token_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                },
            ).json()
            self.token_fetches += 1
            self._token = (answer["access_token"], time.monotonic() + float(answer.get("expires_in", 300)))
            return self._token[0]

    def _headers(self, correlation_id: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.access_token()}",
            "X-Correlation-Id": correlation_id,
            "X-Subscriber-Id": self.subscriber_id,
        }

    # --- the API --------------------------------------------------------------------------------

    def _jobs_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/subscriptions/{self.subscription_id}/batch-request"

    def request_export(self, filetype: str, tokens: dict[str, str], correlation_id: str) -> str:
        body = {"filetype": filetype, "tokens": tokens}
        answer = self._send("POST", self._jobs_url(), json=body, headers=self._headers(correlation_id)).json()
        return answer["jobId"]

    def job_status(self, job_id: str, correlation_id: str) -> dict:
        return self._send("GET", f"{self._jobs_url()}/{job_id}", headers=self._headers(correlation_id)).json()

    def wait_for(
        self,
        job_id: str,
        correlation_id: str,
        deadline_s: float = 1800.0,
        first_wait_s: float = 0.5,
        max_wait_s: float = 60.0,
    ) -> str:
        """Poll with exponential backoff until "Success" (-> its downloadUrl); VendorError on a failure
        status or when the deadline passes."""

        def pending(status: dict) -> bool:
            state = str(status.get("status", "")).lower()
            if state in FAILED_STATUSES:
                raise VendorError(f"export job {job_id} ended with status {status.get('status')!r}: {status}")
            return state != "success"

        try:
            status = Retrying(
                retry=retry_if_result(pending),
                wait=wait_exponential(multiplier=first_wait_s, max=max_wait_s),
                stop=stop_after_delay(deadline_s),
            )(self.job_status, job_id, correlation_id)
        except RetryError as exc:
            raise VendorError(f"export job {job_id} did not succeed within {deadline_s:g} s") from exc
        return status["downloadUrl"]

    def download(self, url: str, correlation_id: str) -> bytes:
        return self._send("GET", url, headers=self._headers(correlation_id)).content

    def export_to_landing(
        self,
        tokens: dict[str, str],
        landing_dir: Path,
        *,
        filetype: str = "Parquet",
        label: str = "export",
        deadline_s: float = 1800.0,
        first_wait_s: float = 0.5,
    ) -> list[Path]:
        """Request, wait, download, and write each file of the export as a landing payload file."""
        return self.export_job_to_landing(
            tokens, landing_dir, filetype=filetype, label=label, deadline_s=deadline_s, first_wait_s=first_wait_s
        )[1]

    def export_job_to_landing(
        self,
        tokens: dict[str, str],
        landing_dir: Path,
        *,
        filetype: str = "Parquet",
        label: str = "export",
        deadline_s: float = 1800.0,
        first_wait_s: float = 0.5,
    ) -> tuple[str, list[Path]]:
        """(job id, landing files): the files are `{label}-{jobId}-{n:05d}.json`, n = 0, 1, ..."""
        correlation_id = str(uuid.uuid4())
        job_id = self.request_export(filetype, tokens, correlation_id)
        url = self.wait_for(job_id, correlation_id, deadline_s=deadline_s, first_wait_s=first_wait_s)
        archive = self.download(url, correlation_id)
        paths = []
        for n, (_member, payload) in enumerate(zip_payloads(archive)):
            # One name per job and part; a retried run (a new job) writes new files whose messages are duplicates.
            paths.append(write_durably(landing_dir, payload, f"{label}-{job_id}-{n:05d}.json"))
        return job_id, paths


def received_day_tokens(day: date) -> dict[str, str]:
    """The tokens of one received day (UTC): [day 00:00Z, next day 00:00Z), offsets included."""
    start = datetime.combine(day, dtime(0), UTC)
    return {
        "StartReceivedDateTime": start.isoformat(),
        "EndReceivedDateTime": (start + timedelta(days=1)).isoformat(),
    }
