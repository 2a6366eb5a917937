"""The OAuth redirect callback over HTTP (aiohttp): the vendor sends the user's browser back here with a code."""

from __future__ import annotations

import html
import logging

from aiohttp import web

from connectors.registry.linking import CALLBACK_PATH, Linker
from mesh.errors import MeshError

log = logging.getLogger("agentmesh.registry.callback")


def _page(title: str, text: str, status: int = 200) -> web.Response:
    body = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>")
    return web.Response(text=body, status=status, content_type="text/html")


def callback_app(linker: Linker) -> web.Application:
    """GET /oauth/callback?code=…&state=… completes the link; ?error=… reports the user's refusal."""

    async def complete(request: web.Request) -> web.Response:
        query = request.query
        if "error" in query:
            refusal = query.get("error_description") or query["error"]
            return _page("Account not linked", f"The system answered: {refusal}.", 400)
        code, state = query.get("code", ""), query.get("state", "")
        if not code or not state or len(code) > 2048 or len(state) > 4096:
            return _page("Account not linked", "The link is incomplete; start it again from the agent.", 400)
        try:
            link = await linker.complete(state, code)
        except MeshError as err:
            log.info("link callback refused: %s", err.reason.value)
            return _page("Account not linked", err.message, 400 if err.code.name != "UNAVAILABLE" else 502)
        return _page("Account linked", f"Your {link.connector} account is linked; you can close this window.")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get(CALLBACK_PATH, complete)
    app.router.add_get("/healthz", healthz)
    return app
