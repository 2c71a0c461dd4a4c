"""The HTTP side of per-user OAuth (mcphub/oauth.py): the browser's part of the flow, and the API.

    GET    /oauth/{server}/connect?link=...  a connect link: a page naming the user and the server, whose
                                             link (…&confirm=1) goes on; with the hub credential, or
                                             confirmed: 302 to the sign-in, setting STATE_COOKIE
    GET    /oauth/{server}/callback          the authorization server's redirect: a page (connected, or why not)
    DELETE /oauth/{server}/connection        the caller forgets (and revokes) their tokens for the server
    GET    /oauth/connections                who is connected where: for a credential allowed every server

The callback completes a sign-in only in the browser that began it (its STATE_COOKIE holds the nonce of
the `state`): an authorization-server URL passed to someone else cannot tie their account to the
link's user; a connect link passed on shows whose hub account it is before anything happens.
Pages carry the status of what happened (400 a bad or used link or state, 403 access denied at the
authorization server, 502 it refused the code) and never a token.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, TypedDict
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mcphub import pages
from mcphub.auth import Principal
from mcphub.errors import Forbidden, HubError, NotFound
from mcphub.oauth import CONNECT, STATE_COOKIE, STATE_TTL, OAuth
from mcphub.supervisor import ServerHandle
from mcphub.toolserver import ToolServer
from mcphub.user_servers import user_of

Instances = Callable[[], dict[str, list[str]]]  # running per-user instances: server → users
Forgotten = Callable[[str, str], None]  # (server, user): their connection was forgotten


def oauth_routes(oauth_of: Callable[[], OAuth | None], authenticate: Callable[[Request], Awaitable[Principal]], *,
                 instances: Instances, forgotten: Forgotten) -> list[Route]:
    """The routes, over the hub's `OAuth` (None: no server uses it; every route answers 404 then)."""

    async def user(request: Request) -> str:
        principal = await authenticate(request)
        found = user_of(principal)
        if found is None:
            raise Forbidden(f"credential '{principal.name}' is not a user: OAuth connections are each user's own "
                            "(call through a front end that names its users, with a key that has forwarded_user)")
        return found

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
            if link and request.query_params.get("confirm") != "1":
                return _confirm(oauth, server, link, await oauth.link_user(server, link))
            sign_in = await oauth.begin(server, link, None if link else await user(request))
        except HubError as exc:
            return _page(exc)
        response = RedirectResponse(sign_in.url, status_code=302, headers={"Cache-Control": "no-store",
                                                                           "Referrer-Policy": "no-referrer"})
        response.set_cookie(STATE_COOKIE, sign_in.nonce, max_age=int(STATE_TTL), **_cookie(oauth, server))
        return response

    async def callback(request: Request) -> Response:
        server = request.path_params["server"]
        try:
            oauth = manager()
            await oauth.finish(server, request.query_params, request.cookies.get(STATE_COOKIE))
        except HubError as exc:
            return _page(exc)
        done = pages.page(f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>mcphub: connected</title></head>
<body><h1>Connected</h1><p>Your account is connected to <b>{html.escape(server)}</b>.
You can close this page and call the tool again.</p></body>
</html>
""", headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
        done.delete_cookie(STATE_COOKIE, **_cookie(oauth, server))
        return done

    async def disconnect(request: Request) -> Response:
        server = request.path_params["server"]
        try:
            oauth = manager()
            who = await user(request)
            had = await oauth.forget(server, who)
            forgotten(server, who)  # their running instance stops: its connection held their token
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
            running = instances()
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


def _confirm(oauth: OAuth, server: str, link: str, user: str) -> Response:
    """"Connect <server> for <user>?": whoever opens a connect link sees whose hub account it ties their
    sign-in to before going on (a plain link: no script, no form, as pages.SECURITY_HEADERS allow)."""
    onward = oauth.public_url + CONNECT.format(server=server) + "?" + urlencode({"link": link, "confirm": "1"})
    name, who = html.escape(server), html.escape(user)
    return pages.page(f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>mcphub: connect {name}?</title></head>
<body><h1>Connect {name} for {who}?</h1>
<p>This link connects the account you sign in with at <b>{name}</b> to the hub user <b>{who}</b>:
their calls to {name} will then act as that account.</p>
<p>If you are not {who}, close this page.</p>
<p><a href="{html.escape(onward, quote=True)}">Continue to sign in</a></p></body>
</html>
""", headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def _callback_path(oauth: OAuth, server: str) -> str:
    return urlsplit(oauth.redirect_uri(server)).path


def _page(exc: HubError) -> Response:
    response = pages.error(exc)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def user_instances(servers: Mapping[str, ToolServer]) -> dict[str, list[str]]:
    """Server → the users who have an instance of it running (per-user servers, user_servers.py)."""
    return {name: pool.users() for name, s in servers.items()
            if isinstance(s, ServerHandle) and (pool := s.users) is not None}


def forget_instance(servers: Mapping[str, ToolServer], server: str, user: str) -> None:
    found = servers.get(server)
    if isinstance(found, ServerHandle) and found.users is not None:
        found.users.forget(user)


class _CookieScope(TypedDict):
    path: str
    secure: bool
    httponly: bool
    samesite: Literal["lax"]


def _cookie(oauth: OAuth, server: str) -> _CookieScope:
    """Where the state cookie lives: the callback only, never to scripts, Secure behind https."""
    return {"path": _callback_path(oauth, server), "secure": oauth.public_url.startswith("https:"),
            "httponly": True, "samesite": "lax"}
