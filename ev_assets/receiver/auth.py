"""The receiver's bearer tokens: the shared token-hash code (ev_assets.tokens)."""

from ev_assets.tokens import TokenBuckets, bearer_token, known_hash, new_token, token_hash

__all__ = ["TokenBuckets", "bearer_token", "known_hash", "new_token", "token_hash"]
