"""The HTTP side of per-user OAuth (mcphub/oauth.py): the browser's part of the flow, and the API.

    GET    /oauth/{server}/connect?link=...  a connect link (or the hub credential) → 302 to the sign-in
    GET    /oauth/{server}/callback          the authorization server's redirect: a page (connected, or why not)
    DELETE /oauth/{server}/connection        the caller forgets (and revokes) their tokens for the server
    GET    /oauth/connections                who is connected where: for a credential allowed every server

Pages carry the status of what happened (400 a bad or used link or state, 403 access denied at the
authorization server, 502 it refused the code) and never a token.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mcphub import pages
from mcphub.auth import Principal
from mcphub.errors import Forbidden, HubError, NotFound
from mcphub.oauth import OAuth, user_of

Admin = Callable[[], Awaitable[dict[str, list[str]]]]  # running per-user instances: user → servers


def oauth_routes(oauth_of: Callable[[], OAuth | None], authenticate: Callable[[Request], Awaitable[Principal]],
                 instances: Admin | None = None) -> list[Route]:
    """The routes, over the hub's `OAuth` (None: no server uses it; every route answers 404 then)."""

    def manager() -> OAuth:
        found = oauth_of()
        if found is None:
            raise NotFound("no server of this hub uses OAuth (oauth: on a streamable-http or sse server)")
        return found

    async def connect(request: Request) -> Response:
        server = request.path_params["server"]
        try:
            oauth = manager()
            link = request.query_params.get("link")
            user = None if link else user_of(await authenticate(request))
            target = await oauth.begin(server, link, user)
        except HubError as exc:
            return _page(exc)
        return RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store",
                                                                  "Referrer-Policy": "no-referrer"})

    async def callback(request: Request) -> Response:
        server = request.path_params["server"]
        try:
            await manager().finish(server, request.query_params)
        except HubError as exc:
            return _page(exc)
        return pages.page(f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>mcphub: connected</title></head>
<body><h1>Connected</h1><p>Your account is connected to <b>{html.escape(server)}</b>.
You can close this page and call the tool again.</p></body>
</html>
""", headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def disconnect(request: Request) -> Response:
        server = request.path_params["server"]
        try:
            oauth = manager()
            user = user_of(await authenticate(request))
            had = await oauth.forget(server, user)
        except HubError as exc:
            return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())
        return JSONResponse({"server": server, "connected": False, "forgotten": had})

    async def connections(request: Request) -> Response:
        try:
            principal = await authenticate(request)
            if "*" not in principal.servers or principal.tools is not None or principal.kind == "user":
                raise Forbidden(f"credential '{principal.name}' may not list connections: that needs a key "
                                "allowed every server and tool (servers: ['*'])")
            oauth = oauth_of()
            found = [] if oauth is None else await oauth.connections()
            running = {} if instances is None else await instances()
        except HubError as exc:
            return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())
        return JSONResponse({
            "connections": [{"server": c.server, "user": c.user, "expires_at": c.expires_at,
                             "refreshable": c.refreshable} for c in found],
            "instances": running,
        })

    return [
        Route("/oauth/connections", connections, methods=["GET"]),
        Route("/oauth/{server}/connect", connect, methods=["GET"]),
        Route("/oauth/{server}/callback", callback, methods=["GET"]),
        Route("/oauth/{server}/connection", disconnect, methods=["DELETE"]),
    ]


def _page(exc: HubError) -> Response:
    response = pages.error(exc)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
