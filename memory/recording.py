"""What a completed run leaves in long-term memory: one short line with the request, tools and key results."""

from __future__ import annotations

OUTCOMES = ("answered", "denied", "no_action", "failed")
_REQUEST_CHARS = 160
_RESULT_CHARS = 80
_MAX_RESULTS = 3
_MAX_TOOLS = 6


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def run_summary(request: str, tools: list[str], results: list[str], outcome: str) -> str:
    """One line, e.g. `Asked "reset my VPN token" → okta.reset_factor; answered: factor reset.`"""
    parts = [f'Asked "{_shorten(request, _REQUEST_CHARS)}"']
    unique = list(dict.fromkeys(t.strip() for t in tools if t.strip()))
    if unique:
        more = f" (+{len(unique) - _MAX_TOOLS} more)" if len(unique) > _MAX_TOOLS else ""
        parts.append(" → " + ", ".join(unique[:_MAX_TOOLS]) + more)
    line = "".join(parts) + f"; {outcome.replace('_', ' ') if outcome else 'done'}"
    kept = [_shorten(r, _RESULT_CHARS) for r in results if r.strip()][:_MAX_RESULTS]
    if kept:
        line += ": " + "; ".join(kept)
    return line + "."
