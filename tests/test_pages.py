"""The pages for people: the status page at `/`, Swagger UI at `/docs` and `/{server}/docs`, the files they
load from the hub itself, and their security headers.

In-process (ASGI) for the HTML and the files. Real processes, on purpose: headless Chromium from Debian's
`chromium` package (`.ci/run` installs it) renders `/` and `/docs` from a hub on 127.0.0.1 with every
other host name unresolvable, so Swagger UI must come up offline, under the pages' CSP. With
MCPHUB_SCREENSHOTS=1 that test also writes the README's screenshots to tests/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import REPO, free_port, missing
from tests.hub import RunningHub, assert_error, running_hub, running_instances, sample_server

pytestmark = pytest.mark.anyio

KEY = "pages-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
MISSING = "/nonexistent/<script>alert(1)</script>"  # a command that fails, with markup in its last error
BROWSER_TIMEOUT = 60.0  # seconds for one headless Chromium run (start, load, Swagger UI's render)
RENDER_BUDGET_MS = 15_000  # virtual time Chromium gives the page's scripts before it dumps the DOM
MOUNT_TIMEOUT = 20.0  # seconds for a hub to mount its sibling (first listing)
SCREENSHOTS = REPO / "tests" / "screenshots"
CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}


class Links(HTMLParser):
    """Every URL a page makes the browser load or link to, and its inline scripts and styles."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [value for key, value in attrs if key in ("src", "href", "action", "data-spec-url") and value]
        self.inline += [f"style={value}" for key, value in attrs if key == "style" or key.startswith("on")]
        self._in_script = tag == "script" and "src" not in found
        if tag == "style":
            self.inline.append("<style>")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def assert_html_page(response: Any) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


async def assert_loads_only_from_the_hub(hub: RunningHub, response: Any, root: str = "") -> list[str]:
    """The page references no outside URL, has no inline script or style, and each file it loads answers
    200 with its content type (fetched as a proxy that strips `root` would pass it on)."""
    links = Links(response.text)
    assert links.urls, response.text
    assert not links.inline, links.inline
    for url in links.urls:
        assert url.startswith(f"{root}/") and not url.startswith("//"), f"{url} is not on the hub"
    assets = [u for u in links.urls if "/docs/assets/" in u]
    for url in assets:
        loaded = await hub.client.get(url.removeprefix(root))
        assert loaded.status_code == 200, url
        assert loaded.headers["content-type"].startswith(CONTENT_TYPES[Path(url).suffix]), url
        assert loaded.headers["x-content-type-options"] == "nosniff"
        assert loaded.content, url
    return assets


# ------------------------------------------------------------------------------------------- Swagger UI
@pytest.mark.parametrize("root", ["", "/tools"], ids=["at-root", "under-root_path"])
async def test_swagger_ui_loads_every_file_from_the_hub_under_root_path_too(root: str) -> None:
    async with running_hub({"hub": {"root_path": root}, "servers": {"sample": sample_server()}}) as hub:
        for path, spec in (("/docs", "/openapi.json"), ("/sample/docs", "/sample/openapi.json")):
            page = await hub.client.get(path)
            assert_html_page(page)
            assets = await assert_loads_only_from_the_hub(hub, page, root)
            assert {Path(a).name for a in assets} == {
                "favicon-32x32.png", "swagger-ui.css", "swagger-ui-bundle.js", "swagger-init.js"}
            assert f'data-spec-url="{root}{spec}"' in page.text
        bundle = await hub.client.get("/docs/assets/swagger-ui-bundle.js")
        assert b"SwaggerUIBundle" in bundle.content and "max-age" in bundle.headers["cache-control"]
        assert b'validatorUrl: null' in (await hub.client.get("/docs/assets/swagger-init.js")).content


async def test_only_the_pages_own_files_are_served() -> None:
    async with running_hub({"servers": {"sample": sample_server()}}) as hub:
        for name in ("index.html", "swagger-ui-bundle.js.map", "..%2Fpages.py", "%2E%2E%2F__init__.py", "LICENSE"):
            error = assert_error(await hub.client.get(f"/docs/assets/{name}"), 404, "not_found")
            assert "/docs/assets/" in error["message"]


# ------------------------------------------------------------------------------------------ status page
async def test_a_browser_gets_the_status_page_and_api_clients_keep_the_json() -> None:
    config = {"servers": {"sample": sample_server(), "broken": {"transport": "stdio", "command": MISSING}}}
    async with running_hub(config) as hub:
        page = await hub.client.get("/", headers=BROWSER)
        assert_html_page(page)
        assert page.headers["vary"] == "Accept"
        assert_html_page(await hub.client.get("/", headers={"Accept": "text/html;q=0.9, application/json;q=0.9"}))
        await assert_loads_only_from_the_hub(hub, page)
        text = page.text
        assert "<b>sample</b>" in text and "<b>broken</b>" in text
        assert '<td class="state state-ready">ready</td><td>stdio</td>' in text
        assert '<td class="state state-failed">failed</td>' in text and "not ready" in text
        tools = len(hub.supervisor.servers["sample"].tools)  # (its spec also has resource and prompt paths)
        assert f'<td class="num">{tools}</td>' in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text  # last error, escaped
        for url in ("http://hub/sample", "http://hub/sample/mcp", "http://hub/mcp", "http://hub/broken"):
            assert f'<td class="url">{url}' in text
        assert 'href="/sample/docs"' in text and 'href="/docs"' in text
        for accept in (None, "*/*", "application/json", "text/html;q=0, application/json",
                       "application/json, text/html;q=0.5", "text/*"):
            answer = await hub.client.get("/", headers={"Accept": accept} if accept else {})
            assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", accept
            assert answer.json()["servers"]["sample"]["docs"] == "/sample/docs"
            assert answer.headers["vary"] == "Accept"


async def test_the_status_page_counts_restarts_and_points_under_root_path() -> None:
    config = {"hub": {"root_path": "/tools"},
              "servers": {"broken": {"transport": "stdio", "command": MISSING, "restart": {"initial_delay": 0.05}}}}
    async with running_hub(config) as hub:
        broken = hub.supervisor.servers["broken"]
        with anyio.fail_after(10):
            while broken.restarts < 2:
                await anyio.sleep(0.05)
        before = broken.restarts
        page = await hub.client.get("/", headers=BROWSER)
        after = broken.restarts  # it goes on restarting meanwhile
        assert_html_page(page)
        await assert_loads_only_from_the_hub(hub, page, "/tools")
        restarts = r'<td class="num">\d+</td><td class="num">(\d+)</td><td><span class="error">command not found'
        shown = re.search(restarts, page.text)
        assert shown and before <= int(shown[1]) <= after, page.text
        assert 'href="/tools/broken/docs"' in page.text
        assert '<td class="url">http://hub/tools/broken/mcp</td>' in page.text


async def test_a_credential_narrows_the_status_page_like_the_specs() -> None:
    config = {"auth": {"api_keys": [{"name": "narrow", "key": KEY, "servers": ["sample"], "tools": ["add", "echo"]}]},
              "servers": {"sample": sample_server(), "other": sample_server()}}
    async with running_hub(config) as hub:
        everyone = (await hub.client.get("/", headers=BROWSER)).text  # public_docs: the whole hub
        assert "<b>other</b>" in everyone and "Every call needs a key" in everyone
        narrow = await hub.client.get("/", headers={**BROWSER, **AUTH})
        assert_html_page(narrow)
        assert "<b>sample</b>" in narrow.text and "<b>other</b>" not in narrow.text and "/other" not in narrow.text
        assert '<td class="num">2</td>' in narrow.text


async def test_with_private_docs_the_status_page_needs_a_credential() -> None:
    config = {"hub": {"public_docs": False}, "auth": {"api_keys": [{"name": "k", "key": KEY}]},
              "servers": {"sample": sample_server()}}
    async with running_hub(config) as hub:
        refused = await hub.client.get("/", headers=BROWSER)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.headers["x-frame-options"] == "DENY"
        assert "hub.public_docs is false" in refused.text and "sample" not in refused.text
        wrong = await hub.client.get("/", headers={**BROWSER, "Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "sample" not in wrong.text
        allowed = await hub.client.get("/", headers={**BROWSER, **AUTH})
        assert_html_page(allowed)
        assert "<b>sample</b>" in allowed.text


async def test_the_status_page_shows_mounted_hubs() -> None:
    cn_port, global_port = free_port(), free_port()
    config = {
        "servers": {"clock": sample_server(), "local": sample_server()},
        "instances": {"global": {"port": global_port, "servers": ["local"], "mount": ["cn"]},
                      "cn": {"port": cn_port, "servers": ["clock"], "url": f"http://127.0.0.1:{cn_port}"}},
    }
    async with running_instances(config, instance="cn"), running_instances(config, instance="global") as hubs:
        client = hubs["global"].client
        with anyio.fail_after(MOUNT_TIMEOUT):
            while "clock" not in (await client.get("/readyz")).json()["servers"]:
                await anyio.sleep(0.05)
        page = await client.get("/", headers=BROWSER)
        assert_html_page(page)
        assert "<h2>Mounted hubs</h2>" in page.text
        assert f'<tr><td><b>cn</b></td><td class="url">http://127.0.0.1:{cn_port}</td>' in page.text
        assert '<b>clock</b> <span class="muted">(hub cn)</span>' in page.text


# ------------------------------------------------------------------------------------ headless Chromium
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        missing("chromium is not installed: apt-get install -y chromium (as .ci/run does)")
    return found


async def render(url: str, profile: Path, *, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran, as headless Chromium saw it with only 127.0.0.1 reachable.
    Its console (on stderr) must show no CSP violation and no resource that failed to load."""
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--enable-logging=stderr", "--v=0",
        f"--virtual-time-budget={RENDER_BUDGET_MS}", "--hide-scrollbars", "--window-size=1280,900",
    ]
    command += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    with anyio.fail_after(BROWSER_TIMEOUT):
        done = await anyio.run_process([*command, url], check=False)
    log = done.stderr.decode(errors="replace")
    assert done.returncode == 0, log[-2000:]
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if "Content Security Policy" in line or "Failed to load" in line], console
    return done.stdout.decode()


async def test_chromium_renders_the_status_page_and_swagger_ui_runs_offline(tmp_path: Path) -> None:
    time_server = {"transport": "stdio", "command": sys.executable, "args": ["-m", "mcphub_servers.time"],
                   "env": {"TIME_LOCAL_TIMEZONE": "UTC"}}
    config = {"servers": {"time": time_server, "sample": sample_server(),
                          "legacy": {"transport": "sse", "url": "http://127.0.0.1:9/sse"}}}
    async with running_hub(config, listen=True) as hub:
        status = await render(f"{hub.url}/", tmp_path / "profile")
        for name in ("time", "sample", "legacy"):
            assert f"<b>{name}</b>" in status, status
        assert f"{hub.url}/time/mcp" in status
        spec = (await hub.client.get("/openapi.json")).json()
        docs = await render(f"{hub.url}/docs", tmp_path / "profile")
        # Swagger UI's script ran (under the page's CSP) and drew one block per operation of the spec
        assert docs.count('class="opblock opblock-post"') == len(spec["paths"]), docs[-3000:]
        for path in ("/time/get_current_time", "/sample/add"):
            assert f'data-path="{path}"' in docs
        one = await render(f"{hub.url}/time/docs", tmp_path / "profile")
        assert 'data-path="/get_current_time"' in one and 'data-path="/sample/add"' not in one
        if os.environ.get("MCPHUB_SCREENSHOTS"):
            SCREENSHOTS.mkdir(exist_ok=True)
            await render(f"{hub.url}/", tmp_path / "profile", screenshot=SCREENSHOTS / "status-page.png")
            await render(f"{hub.url}/time/docs", tmp_path / "profile", screenshot=SCREENSHOTS / "swagger-ui.png")
            for name in ("status-page.png", "swagger-ui.png"):
                assert (SCREENSHOTS / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
