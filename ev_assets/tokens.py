"""Bearer tokens, kept as SHA-256 hashes only, and a token bucket per token: shared by the receiver
and the events API."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A new random token (43 URL-safe characters, 256 bits) and its SHA-256 hash."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def known_hash(token: str, hashes: frozenset[str]) -> str | None:
    """The configured hash the token matches, or None (compared in constant time per hash)."""
    digest = token_hash(token)
    match = None
    for candidate in hashes:
        if hmac.compare_digest(digest, candidate):
            match = candidate
    return match


@dataclass
class TokenBuckets:
    """rate tokens per second up to burst, one bucket per key; rate 0 means unlimited."""

    rate_per_s: float
    burst: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until it could."""
        if self.rate_per_s <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            level, last = self._buckets.get(key, (self.burst, now))
            level = min(self.burst, level + (now - last) * self.rate_per_s)
            if level >= 1.0:
                self._buckets[key] = (level - 1.0, now)
                return 0.0
            self._buckets[key] = (level, now)
            return (1.0 - level) / self.rate_per_s
