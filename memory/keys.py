"""Redis key design: every key hash-tagged by tenant (one slot per tenant on a cluster) and scoped to a user."""

from __future__ import annotations

import hashlib

PREFIX = "am"


def user_tag(user: str) -> str:
    """A stable, non-reversible tag for a user's email (emails stay out of key names)."""
    return hashlib.sha256(user.strip().lower().encode()).hexdigest()[:32]


def session_key(tenant: str, user: str, session_id: str) -> str:
    return f"{PREFIX}:{{{tenant}}}:session:{user_tag(user)}:{session_id}"


def run_key(tenant: str, user: str, run_id: str) -> str:
    return f"{PREFIX}:{{{tenant}}}:run:{user_tag(user)}:{run_id}"


def summary_key(tenant: str, user: str, session_id: str, digest: str) -> str:
    """A model-written summary of a session's older turns (digest: of the model and the turns it condensed)."""
    return f"{PREFIX}:{{{tenant}}}:summary:{user_tag(user)}:{session_id}:{digest}"


def user_index_key(tenant: str, user: str) -> str:
    """The set of every session and run key a user has in a tenant, so ForgetUser never scans."""
    return f"{PREFIX}:{{{tenant}}}:user:{user_tag(user)}:keys"


def kind_of(key: str) -> str:
    """`session`, `run` or `summary`, for a key built above."""
    return key.split(":", 3)[2]
