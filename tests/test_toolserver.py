"""Local and mounted servers are one `ToolServer` to the call path: the same fields, the same call."""

from __future__ import annotations

import httpx2
import pytest

from mcphub.app import create_app
from mcphub.auth import Principal
from mcphub.federation import RemoteServer
from mcphub.invoker import Call
from mcphub.serve import ServeOptions, plan, running
from mcphub.supervisor import ServerHandle
from mcphub.toolserver import State
from tests.hub import config_of, running_hub, sample_server

pytestmark = pytest.mark.anyio


async def test_a_local_and_a_mounted_server_show_the_same_fields_and_answer_the_same_call() -> None:
    lab = {"servers": {"clock": sample_server(region="cn", description="the lab's clock")}}
    async with running_hub(lab, listen=True) as remote:
        config = config_of({"hub": {"mount": ["lab"]}, "remotes": {"lab": {"url": remote.url}},
                            "servers": {"local": sample_server(region="global")}})
        servers, sites = plan(config, ServeOptions())
        async with running(servers, sites) as hub:
            invoker = hub.invokers[0]
            local, mounted = invoker.servers()["local"], invoker.servers()["clock"]
            assert isinstance(local, ServerHandle) and isinstance(mounted, RemoteServer)
            for server, region, where in ((local, "global", None), (mounted, "cn", "lab")):
                assert server.state is State.READY, server.last_error
                assert server.region == region and server.hub == where
                assert "add" in server.tools
                outcome = await invoker.invoke(Call(Principal(name="t"), server.name, "add", {"a": 1, "b": 2}))
                assert (outcome.status, outcome.body["total"]) == (200, 3), outcome.body
            assert mounted.description == "the lab's clock" and mounted.transport == "hub"
            transport = httpx2.ASGITransport(app=create_app(invoker, mounts=sites[0].mounts))
            async with httpx2.AsyncClient(transport=transport, base_url="http://hub") as client:
                ready = (await client.get("/readyz")).json()
            assert ready["servers"]["local"]["region"] == "global"
            assert ready["servers"]["clock"] | {"region": "cn", "hub": "lab", "transport": "hub"} == \
                ready["servers"]["clock"]
            assert ready["hubs"]["lab"]["state"] == "ready"
