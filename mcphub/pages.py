"""The hub's pages for people: the status page at `/`, Swagger UI at `/docs` and `/{server}/docs`, and the
files they load. Server-rendered HTML, every value escaped; nothing is fetched from outside the hub.

Swagger UI's files come from the installed `swagger-ui-bundle-v2` package (its `swagger_ui_bundle`
module: the Swagger UI dist with its licence); the hub's own (the Swagger UI start script, the status
page's stylesheet) are package data in mcphub/assets/. Every page carries SECURITY_HEADERS: its scripts and
styles may come only from the hub itself, so Swagger UI is started by a file, not an inline script, and no
page may be framed.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import swagger_ui_bundle  # type: ignore[import-untyped]
from starlette.responses import FileResponse, HTMLResponse, Response

from mcphub import __version__
from mcphub.errors import HubError
from mcphub.toolserver import ToolServer

ASSETS_PATH = "/docs/assets"  # + /{file}: three path segments, so no server's /{server}/{tool} can shadow it
ASSET_MAX_AGE = 3600  # seconds a browser may reuse a file (they change only when the hub is upgraded)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_SWAGGER_DIST = Path(str(swagger_ui_bundle.swagger_ui_path))
_OWN = Path(__file__).with_name("assets")
_FILES: dict[str, tuple[Path, str]] = {  # the files the pages load: where each is and its content type
    "swagger-ui.css": (_SWAGGER_DIST / "swagger-ui.css", "text/css; charset=utf-8"),
    "swagger-ui-bundle.js": (_SWAGGER_DIST / "swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "favicon-32x32.png": (_SWAGGER_DIST / "favicon-32x32.png", "image/png"),
    "swagger-init.js": (_OWN / "swagger-init.js", "text/javascript; charset=utf-8"),
    "status.css": (_OWN / "status.css", "text/css; charset=utf-8"),
}


class Mount(Protocol):
    """What the status page shows of a mounted hub (federation.RemoteMount)."""

    name: str
    url: str
    last_error: str | None

    @property
    def state(self) -> object: ...
    @property
    def servers(self) -> Mapping[str, object]: ...


def wants_html(accept: str | None) -> bool:
    """Whether an Accept header prefers HTML: it names text/html (a browser's does; curl's `*/*` does not)
    with a quality above zero and no lower than JSON's (application/json, application/* or */*)."""
    html_q = json_q = 0.0
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        try:
            q = float(next((p[2:] for p in params if p.lower().startswith("q=")), "1"))
        except ValueError:
            continue
        if media.lower() in ("text/html", "application/xhtml+xml"):
            html_q = max(html_q, q)
        elif media.lower() in ("application/json", "application/*", "*/*"):
            json_q = max(json_q, q)
    return html_q > 0 and html_q >= json_q


def page(body: str, *, status: int = 200, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def asset(name: str) -> Response | None:
    """One of the files the pages load, or None for a name that is not one of them."""
    found = _FILES.get(name)
    if found is None:
        return None
    path, media_type = found
    return FileResponse(path, media_type=media_type, headers={
        "Cache-Control": f"public, max-age={ASSET_MAX_AGE}", "X-Content-Type-Options": "nosniff"})


def swagger_ui(*, title: str, spec_url: str, root: str) -> HTMLResponse:
    """Swagger UI for the OpenAPI document at `spec_url`; every file it loads is served by the hub."""
    assets = _e(root + ASSETS_PATH)
    return page(f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-spec-url="{_e(spec_url)}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/swagger-init.js"></script>
</body>
</html>
""")


def status(*, servers: Sequence[ToolServer], tools: Mapping[str, int], mounts: Sequence[Mount], ready: bool,
           origin: str, root: str, secured: bool) -> HTMLResponse:
    """The status page: each server's state, transport, tool count (`tools`: what the viewer may call),
    restarts and last error; the mounted hubs; the URLs to give Open WebUI; links to the docs.
    `origin` (scheme://host[:port] as the browser reached the hub) makes the URLs to copy absolute."""
    base = origin + root
    word = "ready" if ready else "not ready"
    rows = "".join(_server_row(s, tools.get(s.name, 0), root) for s in servers) or (
        '<tr><td colspan="7" class="muted">No servers to show.</td></tr>')
    hubs = ""
    if mounts:
        hubs = "<h2>Mounted hubs</h2>\n<table>\n<tr><th>hub</th><th>URL</th><th>state</th><th>servers</th>" \
               "<th>last error</th></tr>\n" + "".join(_mount_row(m) for m in mounts) + "</table>\n"
    key = ("Every call needs a key: in Open WebUI choose <b>Bearer</b> and paste it; with curl, send "
           "<code>Authorization: Bearer &lt;key&gt;</code>." if secured else
           "This hub has no key configured: anyone who can reach it may call its tools.")
    urls = _url_row("all servers (tools named <code>server_tool</code>)", base, "", root) + "".join(
        _url_row(f"<b>{_e(s.name)}</b>", base, f"/{_segment(s.name)}", root) for s in servers)
    return page(f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mcphub: {word}</title>
<link rel="stylesheet" href="{_e(root + ASSETS_PATH)}/status.css">
</head>
<body>
<h1>mcphub <span class="muted">{_e(__version__)}</span></h1>
<p class="lead">Status: <span class="state status-{'ready' if ready else 'not_ready'}">{word}</span>
 &middot; {len(servers)} server{'' if len(servers) == 1 else 's'} shown</p>
<nav><a href="{_e(root)}/docs">API docs (Swagger UI)</a><a href="{_e(root)}/openapi.json">openapi.json</a>
<a href="{_e(root)}/readyz">readyz</a><a href="{_e(root)}/metrics">metrics</a></nav>
<h2>Servers</h2>
<table>
<tr><th>server</th><th>state</th><th>transport</th><th>tools</th><th>restarts</th><th>last error</th><th>docs</th></tr>
{rows}</table>
{hubs}<h2>Connect Open WebUI</h2>
<ol>
<li>In Open WebUI: <b>Admin Panel &rarr; Settings &rarr; External Tools</b>, add a connection.</li>
<li>Type <b>OpenAPI</b>: paste a tool server URL below (Open WebUI reads <code>openapi.json</code> there).
 Type <b>MCP (Streamable HTTP)</b>: paste an MCP URL.</li>
<li>{key}</li>
</ol>
<table>
<tr><th>tools of</th><th>OpenAPI tool server URL</th><th>MCP URL</th><th>docs</th></tr>
{urls}</table>
<p class="muted">URLs as this browser reached the hub; from another machine use the address it reaches.</p>
</body>
</html>
""", headers={"Vary": "Accept"})


def error(exc: HubError) -> HTMLResponse:
    """A refusal (e.g. no credential while hub.public_docs is false) as a page, with the error's status."""
    return page(f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>mcphub: {exc.status_code}</title></head>
<body><h1>{exc.status_code}</h1><p>{_e(str(exc))}</p></body>
</html>
""", status=exc.status_code, headers=exc.headers())


def _server_row(server: ToolServer, tools: int, root: str) -> str:
    state = str(server.state)
    where = f' <span class="muted">(hub {_e(server.hub)})</span>' if server.hub else ""
    region = f' <span class="muted">[{_e(server.region)}]</span>' if server.region else ""
    user_instances = getattr(server, "user_instances", None)  # a per-user server (user_servers.py)
    if user_instances is not None:
        region += f' <span class="muted">(per user: {user_instances} running)</span>'
    last_error = f'<span class="error">{_e(server.last_error)}</span>' if server.last_error else ""
    return (f"<tr><td><b>{_e(server.name)}</b>{where}{region}</td>"
            f'<td class="state state-{_e(state)}">{_e(state)}</td><td>{_e(server.transport)}</td>'
            f'<td class="num">{tools}</td><td class="num">{server.restarts}</td><td>{last_error}</td>'
            f'<td><a href="{_e(f"{root}/{_segment(server.name)}/docs")}">docs</a></td></tr>\n')


def _mount_row(mount: Mount) -> str:
    state = str(mount.state)
    last_error = f'<span class="error">{_e(mount.last_error)}</span>' if mount.last_error else ""
    return (f'<tr><td><b>{_e(mount.name)}</b></td><td class="url">{_e(mount.url)}</td>'
            f'<td class="state state-{_e(state)}">{_e(state)}</td><td>{_e(", ".join(sorted(mount.servers)))}</td>'
            f"<td>{last_error}</td></tr>\n")


def _url_row(label: str, base: str, path: str, root: str) -> str:
    """`label` is already HTML; the rest is escaped here."""
    return (f'<tr><td>{label}</td><td class="url">{_e(base + path)}</td><td class="url">{_e(base + path)}/mcp</td>'
            f'<td><a href="{_e(f"{root}{path}/docs")}">docs</a></td></tr>\n')


def _segment(name: str) -> str:
    return quote(name, safe="")


def _e(text: str) -> str:
    return html.escape(text, quote=True)
