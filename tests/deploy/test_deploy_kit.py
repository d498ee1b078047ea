"""deploy/ read statically (no Docker daemon or cluster here): the compose file, the Dockerfiles, the
Kubernetes example and nginx's configuration must agree with each other and with the repository.

The same topology runs for real in tests/assistant/test_topology.py (deploy/local/topology.py).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENDPOINTS = REPO / "rasa_project" / "endpoints.production.yml"
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET")


def compose() -> Dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def endpoint_variables() -> Set[str]:
    """The ${VARIABLES} Rasa fills in from the environment in endpoints.production.yml."""
    return set(re.findall(r"\$\{(\w+)\}", ENDPOINTS.read_text(encoding="utf-8")))


def rasa_services(services: Dict[str, Any]) -> List[str]:
    return sorted(name for name in services if re.fullmatch(r"rasa-\d+", name))


def env_example() -> Dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


# --------------------------------------------------------------------------------------- compose
def test_compose_has_the_topology() -> None:
    services = compose()["services"]
    assert len(rasa_services(services)) >= 2
    assert {"actions", "postgres", "redis", "nginx", "train"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["nginx"]["image"].startswith("nginx:")
    assert services["train"]["profiles"] == ["train"], "training is a one-off, not part of `up`"


def test_every_rasa_worker_gets_what_the_production_endpoints_read() -> None:
    services = compose()["services"]
    for name in rasa_services(services):
        service = services[name]
        command = " ".join(service["command"])
        assert "rasa_project/endpoints.production.yml" in command and "--enable-api" in command
        assert '--auth-token "$$RASA_AUTH_TOKEN"' in command, "the API token comes from the container's environment"
        assert endpoint_variables() <= set(service["environment"]), endpoint_variables() - set(service["environment"])
        assert service["environment"]["ACTION_SERVER_URL"] == "http://actions:5055/webhook"
        assert service["environment"]["DB_HOST"] == "postgres" and service["environment"]["REDIS_HOST"] == "redis"
        assert {"postgres", "redis", "actions"} <= set(service["depends_on"])
        assert all(d["condition"] == "service_healthy" for d in service["depends_on"].values())
        assert "models:/app/models:ro" in service["volumes"]


def test_every_long_running_service_has_a_health_check_and_restarts() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if "profiles" in service:
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service.get("restart") == "unless-stopped", name
    for name in rasa_services(services):  # /status: 200 only with a model loaded
        assert "/status?token=" in " ".join(services[name]["healthcheck"]["test"])


def _values(node: Any, path: str = "") -> List[Tuple[str, str]]:
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in _values(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [pair for i, v in enumerate(node) for pair in _values(v, f"{path}[{i}]")]
    return [(path, str(node))]


def test_secrets_come_from_the_environment_and_are_required() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for name in re.findall(r"\$\{(\w+)", text):
        if any(word in name for word in SECRET_WORDS):
            assert re.search(r"\$\{" + name + r":\?", text) and not re.search(r"\$\{" + name + r":?-", text), (
                f"${{{name}}} must be required (${{{name}:?...}}), never defaulted"
            )
    for path, value in _values(compose()["services"]):
        key = path.rsplit(".", 1)[-1]
        if any(word in key for word in SECRET_WORDS):
            assert value.startswith("${") and ":?" in value, (
                f"{path} = {value!r}: a secret written into the compose file"
            )
    example = env_example()
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "RASA_AUTH_TOKEN"} <= set(example)
    assert all(v.startswith("change-me") for k, v in example.items() if any(w in k for w in SECRET_WORDS))
    assert "deploy/.env" in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_volumes_mounts_and_builds_exist() -> None:
    data = compose()
    declared = set(data["volumes"])
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), f"{name}: {build}"
        for dependency in service.get("depends_on", {}):
            assert dependency in data["services"], f"{name} depends on unknown {dependency}"
    assert {"models", "pgdata"} <= declared


def test_nginx_upstream_lists_exactly_the_rasa_services() -> None:
    servers = re.findall(
        r"^server\s+(\S+)", (DEPLOY / "nginx" / "upstream-servers.conf").read_text(encoding="utf-8"), flags=re.M
    )
    assert servers == [f"{name}:5005" for name in rasa_services(compose()["services"])]
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text(encoding="utf-8")
    assert "hash $conversation_key;" in conf  # not `consistent`: its ring shares workers unevenly
    assert "js_set $conversation_key conversation.key;" in conf
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in conf
    # a variable in proxy_pass is evaluated before nginx reads the body, and the key would never see the sender
    assert re.findall(r"^\s*proxy_pass (\S+);", conf, flags=re.M) == ["http://rasa", "http://rasa"]


def test_nginx_waits_longer_than_a_dead_workers_lock() -> None:
    """A message retried on the other worker waits for the dead worker's Redis lock: nginx must wait longer."""
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text(encoding="utf-8")
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1))
    lifetimes = {
        int(s["environment"]["TICKET_LOCK_LIFETIME"]) for n, s in compose()["services"].items() if n.startswith("rasa-")
    }
    k8s = yaml.safe_load((DEPLOY / "k8s" / "config.yaml").read_text(encoding="utf-8"))["data"]
    lifetimes.add(int(k8s["TICKET_LOCK_LIFETIME"]))
    assert max(lifetimes) * 3 <= read_timeout, (lifetimes, read_timeout)


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """`docker compose config` where the compose plugin exists (it needs no daemon)."""
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(tmp_path),
        "POSTGRES_PASSWORD": "x",
        "REDIS_PASSWORD": "y",
        "RASA_AUTH_TOKEN": "z",
    }
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"},
        timeout=60,
    )
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


# --------------------------------------------------------------------------------------- Dockerfiles
def instructions(path: Path) -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: List[Tuple[str, str]] = []
    buffer = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        buffer += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = buffer.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buffer = ""
    return out


def dockerignored(relative: str) -> bool:
    patterns = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if p.strip() and not p.startswith("#")
    ]
    return any(fnmatch.fnmatch(relative, p) or relative.startswith(p.rstrip("/") + "/") for p in patterns)


@pytest.mark.parametrize("name", ["serve.Dockerfile", "train.Dockerfile"])
def test_dockerfile_is_sound(name: str) -> None:
    steps = instructions(DEPLOY / name)
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1] if "=" in rest else "" for word, rest in steps if word == "ARG"
    }
    for word, rest in steps:
        if word == "FROM":
            image = rest.split()[0]
            image = args.get(image.strip("${}"), image) if image.startswith("${") else image
            assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned base image {image}"
        if word == "COPY" and "--from=" not in rest:
            for source in shlex.split(rest)[:-1]:
                assert (REPO / source).exists(), f"{name}: COPY {source}: not in the repository"
                assert not dockerignored(source), f"{name}: COPY {source}, but .dockerignore leaves it out"
        if word == "RUN" and "apt-get install" in rest:
            assert "--no-install-recommends" in rest and "rm -rf /var/lib/apt/lists/*" in rest, f"{name}: {rest}"
        if word in ("CMD", "ENTRYPOINT"):
            assert isinstance(json.loads(rest), list), f"{name}: {word} in shell form"
        assert word != "ADD", f"{name}: use COPY"
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{name} runs as root"


def test_the_serve_image_installs_the_base_package_and_the_train_image_the_extra() -> None:
    serve = " ".join(rest for word, rest in instructions(DEPLOY / "serve.Dockerfile") if word == "RUN")
    train = " ".join(rest for word, rest in instructions(DEPLOY / "train.Dockerfile") if word == "RUN")
    assert "pip install -c constraints.txt . " in serve + " " and "[train]" not in serve
    assert "torch" not in serve and "transformers" not in serve
    assert '".[train]"' in train
    assert "pip check" in serve and "pip check" in train


def test_dockerignore_keeps_the_context_small() -> None:
    for heavy in (".venv", ".git", "models", "benchmarks", "tests"):
        assert dockerignored(heavy), heavy


def test_the_images_offline_settings() -> None:
    serve = {rest for word, rest in instructions(DEPLOY / "serve.Dockerfile") if word == "ENV"}
    assert any("HF_HUB_OFFLINE=1" in e for e in serve), "serving never reaches for the hub"


# --------------------------------------------------------------------------------------- Kubernetes
def kustomization() -> Dict[str, Any]:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))


def manifests() -> List[Dict[str, Any]]:
    docs = []
    for resource in kustomization()["resources"]:
        path = DEPLOY / resource
        assert path.is_file(), resource
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def pod_templates(docs: List[Dict[str, Any]]) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    out = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            out.append((doc, doc["spec"]["template"]))
        elif doc["kind"] == "CronJob":
            out.append((doc, doc["spec"]["jobTemplate"]["spec"]["template"]))
    return out


def test_kubernetes_workloads_have_probes_limits_and_known_references() -> None:
    docs = manifests()
    custom = kustomization()
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    config_maps = {n for k, n in names if k == "ConfigMap"} | {g["name"] for g in custom["configMapGenerator"]}
    secrets = {g["name"]: set(env_example()) for g in custom["secretGenerator"]}
    claims = {n for k, n in names if k == "PersistentVolumeClaim"}
    for owner, template in pod_templates(docs):
        spec = template["spec"]
        for container in spec["containers"]:
            where = f"{owner['kind']}/{owner['metadata']['name']}"
            if owner["kind"] != "CronJob":
                assert container.get("readinessProbe") and container.get("livenessProbe"), f"{where} has no probes"
            assert container["resources"]["limits"]["memory"], where
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], (
                        f"{where}: secret key {ref['key']} is not in deploy/.env.example"
                    )
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, where
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, volume
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
    for group in custom["configMapGenerator"]:
        for entry in group["files"]:
            assert (DEPLOY / entry.split("=")[-1]).is_file(), entry


def test_kubernetes_services_select_pods() -> None:
    docs = manifests()
    labels = [t.get("metadata", {}).get("labels", {}) for _, t in pod_templates(docs)]
    for doc in docs:
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
            assert any(selector.items() <= pod.items() for pod in labels), (
                f"Service {doc['metadata']['name']} selects no pod"
            )


def test_kubernetes_rasa_workers_read_the_production_endpoints() -> None:
    docs = manifests()
    rasa = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "rasa")
    container = rasa["spec"]["template"]["spec"]["containers"][0]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rasa-environment")["data"]
    provided = set(config) | {e["name"] for e in container["env"]}
    assert endpoint_variables() <= provided, endpoint_variables() - provided
    assert "rasa_project/endpoints.production.yml" in container["args"][0]
    # nginx's upstream list: one line per replica, the StatefulSet's stable pod names
    servers = re.findall(
        r"^server\s+(\S+)", (DEPLOY / "k8s" / "upstream-servers.conf").read_text(encoding="utf-8"), flags=re.M
    )
    service, namespace = rasa["spec"]["serviceName"], kustomization()["namespace"]
    assert servers == [
        f"rasa-{i}.{service}.{namespace}.svc.cluster.local:5005" for i in range(rasa["spec"]["replicas"])
    ]
    headless = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == service)
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True


# --------------------------------------------------------------------------------------- prefetch
def test_prefetch_finds_the_production_hub_models() -> None:
    from deploy.prefetch_models import hub_models

    found = [(component, model) for component, model, _ in hub_models(REPO / "config.yml")]
    assert found == [
        ("nlu_bert.BertIntentClassifier", "hfl/chinese-bert-wwm-ext"),
        ("nlu_bert.GPT2FewShotIntentClassifier", "qgyd2021/few_shot_intent_gpt2_base"),
    ]
    assert hub_models(REPO / "config.offline.yml") == []
