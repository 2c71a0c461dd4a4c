"""deploy/: the Compose file, nginx config, hub config and Kubernetes manifests stay valid and agree.

Offline: Kubernetes objects against the schemas kubernetes-validate ships, the Compose file against the
Compose Specification's schema (vendored in tests/schemas/), nginx.conf through `nginx -t`, deploy/mcphub.yaml
through mcphub's own loader; then the cross-references a schema cannot see (names, ports, probe paths, user).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mcphub.config import HubConfig, HubSettings, load_config, parse_config
from tests.helpers import missing

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
K8S_VERSION = "1.33"  # a release kubernetes-validate ships schemas for; strict: unknown fields are errors
NGINX_TIMEOUT = 30  # seconds for `nginx -t` (it parses one small file)
ENV = {"OWUI_TOOLS_KEY": "test-key-0123456789"}  # what deploy/.env or the Secret supplies

Obj = dict[str, Any]


# ------------------------------------------------------------------------------------------- helpers
def kustomization() -> Obj:
    data: Obj = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return data


def rendered() -> list[Obj]:
    """What `kubectl apply -k deploy/kubernetes` applies: the resources with the kustomization's labels
    and image names applied (the only kustomize features the kustomization uses, checked below)."""
    kust = kustomization()
    labels: dict[str, str] = {}
    for entry in kust.get("labels", []):
        labels.update(entry["pairs"])
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in kust.get("images", [])}
    objects: list[Obj] = []
    for name in kust["resources"]:
        for doc in yaml.safe_load_all((KUBERNETES / name).read_text()):
            if doc is None:
                continue
            doc["metadata"].setdefault("labels", {}).update(labels)
            for container in containers(doc):
                container["image"] = images.get(container["image"], container["image"])
            objects.append(doc)
    return objects


def containers(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    found: list[Obj] = spec.get("containers", []) + spec.get("initContainers", [])
    return found


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name!r} in deploy/kubernetes, found {len(matches)}"
    return matches[0]


def hub_container() -> Obj:
    (container,) = [c for c in containers(one(rendered(), "Deployment", "mcphub")) if c["name"] == "mcphub"]
    return container


def arg(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} not in {args}"
    return args[args.index(flag) + 1]


def dockerfile_uid() -> int:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"useradd\b.*--uid (\d+) (\w+)", text)
    assert match, "Dockerfile: no `useradd --uid N NAME` line"
    assert re.search(rf"^USER {match.group(2)}\s*$", text, re.M), "Dockerfile does not switch to its user"
    return int(match.group(1))


def compose() -> Obj:
    data: Obj = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def hub_config(text: str | None = None) -> HubConfig:
    """deploy/mcphub.yaml through mcphub's loader. Until `hub.state` exists (issue #14's state work), the
    file is loaded without that one key, so everything else in it is still checked."""
    if "state" in HubSettings.model_fields:
        return load_config(DEPLOY / "mcphub.yaml", environ=ENV)
    raw = yaml.safe_load(text if text is not None else (DEPLOY / "mcphub.yaml").read_text())
    raw["hub"].pop("state")
    return parse_config(json.dumps(raw), source="deploy/mcphub.yaml", environ=ENV)


# ------------------------------------------------------------------------------------------- Kubernetes
def test_kustomization_uses_only_what_the_test_renders() -> None:
    assert set(kustomization()) <= {"apiVersion", "kind", "labels", "resources", "images"}
    listed = set(kustomization()["resources"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}


def test_every_kubernetes_object_is_valid() -> None:
    objects = rendered()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler", "Ingress",
                     "PodDisruptionBudget", "Secret", "Service", "Service", "Service"]
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_an_invalid_object_is_caught() -> None:
    """The validation above can fail: a misspelt field and a wrong type are refused."""
    deployment = one(rendered(), "Deployment", "mcphub")
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    deployment = one(rendered(), "Deployment", "mcphub")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_configmap_is_deploy_mcphub_yaml_and_is_mounted_where_the_hub_reads_it() -> None:
    objects = rendered()
    deployment = one(objects, "Deployment", "mcphub")
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    configmap = one(objects, "ConfigMap", volume["configMap"]["name"])
    for item in volume["configMap"]["items"]:
        assert item["key"] in configmap["data"], f"the Deployment mounts key {item['key']!r}, not in the ConfigMap"
    assert configmap["data"]["mcphub.yaml"] == (DEPLOY / "mcphub.yaml").read_text(), \
        "deploy/kubernetes/configmap.yaml differs from deploy/mcphub.yaml: copy the file into it"
    container = hub_container()
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount  # a subPath mount never sees an edited ConfigMap (hub.reload)
    (path,) = [i["path"] for i in volume["configMap"]["items"] if i["key"] == "mcphub.yaml"]
    assert arg(container["args"], "-c") == f"{mount['mountPath']}/{path}"


def test_secrets_the_hub_needs_exist() -> None:
    objects = rendered()
    for env in hub_container()["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref and not ref.get("optional"):
            assert ref["key"] in one(objects, "Secret", ref["name"])["stringData"]
    names = {e["name"] for e in hub_container()["env"]}
    assert names >= set(ENV), "the hub needs every variable deploy/mcphub.yaml requires"


def test_ports_and_probes_agree() -> None:
    objects = rendered()
    container = hub_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = hub_config()
    assert ports["http"] == int(arg(container["args"], "--port")) == config.hub.port == 8000
    assert arg(container["args"], "--host") == config.hub.host == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    pod_labels = one(objects, "Deployment", "mcphub")["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service", "mcphub")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in ports
    backend = one(objects, "Ingress", "mcphub")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "mcphub", "port": {"name": service_port["name"]}}
    sessions = one(objects, "Service", "mcphub-mcp")  # for 2025 MCP session clients (see service.yaml)
    assert sessions["spec"]["selector"] == service["spec"]["selector"]
    assert sessions["spec"]["ports"] == service["spec"]["ports"]
    assert sessions["spec"]["sessionAffinity"] == "ClientIP" and "sessionAffinity" not in service["spec"]
    annotations = one(objects, "Ingress", "mcphub")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$remote_addr $http_authorization"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    pdb = one(objects, "PodDisruptionBudget", "mcphub")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_replicas_scaling_and_resources() -> None:
    objects = rendered()
    deployment = one(objects, "Deployment", "mcphub")
    assert deployment["spec"]["replicas"] == 2
    hpa = one(objects, "HorizontalPodAutoscaler", "mcphub")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mcphub"}
    assert hpa["spec"]["minReplicas"] >= deployment["spec"]["replicas"]
    assert one(objects, "PodDisruptionBudget", "mcphub")["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    for obj in objects:
        for container in containers(obj):
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]
            assert "memory" in container["resources"]["limits"], container["name"]


def test_pods_run_as_the_images_non_root_user() -> None:
    uid = dockerfile_uid()
    assert uid != 0
    for obj in rendered():
        if obj["kind"] != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in containers(obj):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True
    hub_pod = one(rendered(), "Deployment", "mcphub")["spec"]["template"]["spec"]
    assert hub_pod["securityContext"]["runAsUser"] == hub_container()["securityContext"]["runAsUser"] == uid
    # the image's writable places are volumes, as readOnlyRootFilesystem needs
    mounts = {m["mountPath"] for m in hub_container()["volumeMounts"]}
    assert {"/tmp", "/home/mcphub"} <= mounts


def test_the_state_url_names_the_redis_service() -> None:
    objects = rendered()
    (state,) = [e["value"] for e in hub_container()["env"] if e["name"] == "MCPHUB_STATE"]
    match = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", state)
    assert match, state
    service = one(objects, "Service", match.group(1))
    assert int(match.group(2)) in {p["port"] for p in service["spec"]["ports"]}
    redis = one(objects, "Deployment", "redis")
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()


# ------------------------------------------------------------------------------------------- hub config
def test_deploy_mcphub_yaml_loads() -> None:
    config = hub_config()
    assert config.hub.host == "0.0.0.0"
    assert set(config.servers) == {"time", "weather", "arxiv", "github", "searxng"}
    (key,) = config.auth.api_keys
    assert key.name == "openwebui" and key.key == ENV["OWUI_TOOLS_KEY"]
    # the names nginx (compose) and the Service (Kubernetes) pass as Host
    assert {"nginx", "mcphub", "*.svc.cluster.local", "localhost"} <= set(config.hub.allowed_hosts)


def test_deploy_mcphub_yaml_needs_its_key() -> None:
    """Without OWUI_TOOLS_KEY the config is refused, naming the key (never served without a credential)."""
    from mcphub.config import ConfigError

    text = (DEPLOY / "mcphub.yaml").read_text()
    raw = yaml.safe_load(text)
    if "state" not in HubSettings.model_fields:
        raw["hub"].pop("state")
    with pytest.raises(ConfigError, match="OWUI_TOOLS_KEY"):
        parse_config(json.dumps(raw), source="deploy/mcphub.yaml", environ={})


def test_deploy_mcphub_yaml_shares_state_through_redis() -> None:
    if "state" not in HubSettings.model_fields:
        pytest.skip("hub.state is not in this mcphub yet (issue #14's shared state)")
    config = load_config(DEPLOY / "mcphub.yaml", environ=ENV)
    assert config.hub.state == "redis://redis:6379/0"


# ------------------------------------------------------------------------------------------- Compose
def test_compose_file_is_valid() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    broken = compose()
    broken["services"]["nginx"]["ports"] = {"8000": 80}  # a mapping where a list belongs
    broken["services"]["redis"]["restart_policy"] = "always"  # no such key
    assert len(list(validator.iter_errors(broken))) == 2


def test_compose_wiring() -> None:
    services = compose()["services"]
    assert {"hub-1", "hub-2", "redis", "nginx", "open-webui"} <= set(services)
    upstream = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", (DEPLOY / "nginx.conf").read_text(), re.M)
    assert sorted(upstream) == [("hub-1", "8000"), ("hub-1", "8000"), ("hub-2", "8000"), ("hub-2", "8000")]  # 2 upstreams
    for name in ("hub-1", "hub-2"):
        hub = services[name]
        assert (ROOT / "deploy" / hub["build"]["context"] / "Dockerfile").is_file()
        assert int(arg(hub["command"], "--port")) == 8000
        (mount,) = [v for v in hub["volumes"] if "mcphub.yaml" in v]
        source, target, _ = mount.split(":")
        assert (DEPLOY / source).resolve() == DEPLOY / "mcphub.yaml"
        assert arg(hub["command"], "-c") == target
        assert hub["environment"]["MCPHUB_STATE"] == "redis://redis:6379/0"
        assert set(ENV) <= set(hub["environment"])
    (conf,) = services["nginx"]["volumes"]
    assert (DEPLOY / conf.split(":")[0]).resolve() == DEPLOY / "nginx.conf"
    assert conf.split(":")[1] == "/etc/nginx/nginx.conf"
    nginx_port = services["nginx"]["ports"][0].split(":")[1]
    assert re.search(rf"^\s*listen {nginx_port};", (DEPLOY / "nginx.conf").read_text(), re.M)
    connections = services["open-webui"]["environment"]["TOOL_SERVER_CONNECTIONS"]
    (connection,) = json.loads(connections)
    assert connection["url"] == "http://nginx" and connection["auth_type"] == "bearer"
    assert connection["key"] == "${OWUI_TOOLS_KEY}"  # compose fills it in; the hub's auth.api_keys checks it


# ------------------------------------------------------------------------------------------- nginx
def nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        missing("nginx is not installed: apt-get install -y nginx (as .ci/run does)")
    return found


def nginx_test(conf: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # the upstream names resolve inside compose only; here they are the loopback address
    conf = re.sub(r"(^\s*server\s+)hub-\d+(:\d+)", r"\g<1>127.0.0.1\g<2>", conf, flags=re.M)
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    return subprocess.run([nginx(), "-t", "-q", "-p", str(tmp_path), "-e", "stderr", "-c", str(path)],
                          capture_output=True, text=True, timeout=NGINX_TIMEOUT, check=False)


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr
    broken = nginx_test(conf.replace("proxy_buffering off;", "proxy_buffering of;"), tmp_path)
    assert broken.returncode != 0 and "proxy_buffering" in broken.stderr


def test_nginx_streams_and_keeps_sessions_together() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    directives = {line.split("#")[0].strip() for line in conf.splitlines()}
    for needed in ("proxy_buffering off;", "proxy_request_buffering off;", "proxy_http_version 1.1;",
                   'proxy_set_header Connection "";', "proxy_set_header Host $host;",
                   "map $http_mcp_protocol_version $mcphub_mcp_affinity {", "hash $mcphub_mcp_affinity consistent;",
                   '""           "$remote_addr $http_authorization";', "default      $request_id;",
                   "proxy_pass http://mcphub_mcp;", "location ~ ^/([A-Za-z0-9_-]+/)?mcp$ {", "least_conn;"):
        assert needed in directives, f"deploy/nginx.conf lacks {needed!r}"
    keepalive = re.search(r"^\s*keepalive (\d+);", conf, re.M)
    assert keepalive and int(keepalive.group(1)) > 0
    timeout = re.search(r"^\s*proxy_read_timeout (\d+)s;", conf, re.M)
    assert timeout and int(timeout.group(1)) > 3600  # servers.*.job_timeout's default


def test_rendering_matches_kubectl_kustomize() -> None:
    """rendered() is what kubectl applies (where kubectl is installed; CI does not install it)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True,
                            timeout=NGINX_TIMEOUT, check=True)
    theirs = [o for o in yaml.safe_load_all(result.stdout) if o]

    def key(obj: Obj) -> tuple[str, str]:
        return obj["kind"], obj["metadata"]["name"]

    assert sorted(rendered(), key=key) == sorted(theirs, key=key)


# ------------------------------------------------------------------------------------------- live
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
SESSIONS = 20  # 2025 sessions opened through nginx; with 2 replicas a wrong affinity loses about half
HUB_READY_TIMEOUT = 30.0  # seconds for two hubs (one stdio server each) to be ready


def test_two_hubs_behind_deploy_nginx_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/nginx.conf in front of two real hubs: every 2025 session (initialize, then requests with its
    Mcp-Session-Id) reaches the replica that holds it, OpenAPI calls reach both replicas, and an event
    stream passes through. Shared state is not what this is about: the hubs run without hub.state."""
    from tests.helpers import free_port, mcphub_process, stop_process, wait_until

    nginx_binary = nginx()
    raw = yaml.safe_load((DEPLOY / "mcphub.yaml").read_text())
    raw["hub"].pop("state")
    raw["servers"] = {"time": raw["servers"]["time"]}
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(raw))
    ports = [free_port(), free_port()]
    front = free_port()
    conf = (DEPLOY / "nginx.conf").read_text().replace("listen 80;", f"listen 127.0.0.1:{front};")
    for n, port in enumerate(ports, 1):
        conf = conf.replace(f"hub-{n}:8000", f"127.0.0.1:{port}")
    (tmp_path / "nginx.conf").write_text(conf)
    monkeypatch.setenv("OWUI_TOOLS_KEY", ENV["OWUI_TOOLS_KEY"])
    auth = {"Authorization": f"Bearer {ENV['OWUI_TOOLS_KEY']}"}
    base = f"http://127.0.0.1:{front}"
    import httpx2

    with contextlib.ExitStack() as stack:
        for port in ports:
            stack.enter_context(mcphub_process("serve", "-c", str(tmp_path / "hub.yaml"), "--host", "127.0.0.1",
                                               "--port", str(port), stdout=subprocess.DEVNULL))
        proxy = subprocess.Popen([nginx_binary, "-p", str(tmp_path), "-e", "stderr", "-c", str(tmp_path / "nginx.conf"),
                                  "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(stop_process, proxy)
        client = stack.enter_context(httpx2.Client(headers=auth, timeout=10))
        for port in ports:
            wait_until(lambda p=port: client.get(f"http://127.0.0.1:{p}/readyz").status_code == 200,
                       timeout=HUB_READY_TIMEOUT, what=f"the hub on port {port} to be ready")
        wait_until(lambda: client.get(f"{base}/readyz").status_code == 200, timeout=HUB_READY_TIMEOUT,
                   what="nginx to answer")

        lost = []
        for n in range(SESSIONS):
            opened = client.post(f"{base}/mcp", headers=MCP_HEADERS, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
            assert opened.status_code == 200, opened.text
            session = {**MCP_HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"],
                       "MCP-Protocol-Version": "2025-11-25"}
            client.post(f"{base}/mcp", headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            listed = client.post(f"{base}/mcp", headers=session, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
            if listed.status_code != 200 or "get_current_time" not in listed.text:
                lost.append(f"session {n}: {listed.status_code} {listed.text[:100]}")
        assert lost == [], f"{len(lost)} of {SESSIONS} sessions reached the wrong replica: {lost[:3]}"

        for _ in range(10):
            call = client.post(f"{base}/time/get_current_time", json={"timezone": "UTC"})
            assert call.status_code == 200, call.text
        for port in ports:  # least_conn: both replicas took calls
            metrics = client.get(f"http://127.0.0.1:{port}/metrics").text
            assert re.search(r'^mcphub_tool_calls_total\{.*status="200".*\} [1-9]', metrics, re.M), port

        with client.stream("POST", f"{base}/time/get_current_time", json={"timezone": "UTC"},
                           headers={"Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            body = "".join(stream.iter_text())
        assert body.startswith("event: result\ndata: {") and '"timezone":"UTC"' in body
