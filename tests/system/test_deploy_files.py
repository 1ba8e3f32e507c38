"""The deployment files say what the README promises (read, not run: the live checks are
`docker-compose up` in docs and the release notes)."""
from __future__ import annotations

import pytest

from tests.helpers import ROOT

yaml = pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.mark.parametrize("service", ["poseserve", "poseserve-gpu"])
def test_compose_services_are_locked_down_and_limited(compose, service):
    s = compose["services"][service]
    assert "version" not in compose  # obsolete in the Compose specification
    assert s["read_only"] is True and s["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in s["security_opt"]
    assert s["pids_limit"] and s["cpus"] and s["mem_limit"]
    assert any(t.startswith("/tmp:") and "size=" in t for t in s["tmpfs"])  # uploads spool there
    assert s["stop_grace_period"] and s["healthcheck"]["test"]
    assert all(p.startswith("${POSE_BIND:-127.0.0.1}:") for p in s["ports"])  # loopback unless asked


def test_the_gpu_service_extends_the_shared_environment(compose):
    cpu, gpu = compose["services"]["poseserve"]["environment"], compose["services"]["poseserve-gpu"]["environment"]
    assert set(cpu) < set(gpu) and gpu["POSE_DEVICE"] == "cuda"


kv = pytest.importorskip("kubernetes_validate")
K8S = sorted((ROOT / "deploy" / "k8s").rglob("*.yaml"))


def k8s_docs() -> list[tuple[str, dict]]:
    return [(f"{p.relative_to(ROOT)}:{d['kind']}", d) for p in K8S for d in yaml.safe_load_all(p.read_text())]


@pytest.mark.parametrize("name, doc", k8s_docs(), ids=[n for n, _ in k8s_docs()])
def test_kubernetes_manifests_validate_against_the_schemas(name, doc):
    kv.validate(doc, kv.latest_version(), strict=True)  # strict: unknown (typo'd) fields fail


def test_the_validator_catches_a_typo():
    deployment = next(d for _, d in k8s_docs() if d["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicass": 3}}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def deployments() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == "Deployment"}


@pytest.mark.parametrize("name", ["poseserve", "poseserve-gpu"])
def test_deployments_probe_limit_and_lock_down_like_compose(name, monkeypatch):
    import app.settings as settings

    pod = deployments()[name]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" == c["startupProbe"]["httpGet"]["path"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"] == c["resources"]["limits"]  # Guaranteed QoS
    cpus = int(c["resources"]["limits"]["cpu"])
    monkeypatch.setattr(settings, "cpu_quota", lambda: cpus)  # what the pod's cgroup will say
    pool, threads = settings.Settings().threads_and_pool()
    assert pool * threads == cpus  # the thread budget is exactly the CPU limit
    sc, pod_sc = c["securityContext"], pod["securityContext"]
    assert pod_sc["runAsNonRoot"] and pod_sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["terminationGracePeriodSeconds"] > c["lifecycle"]["preStop"]["sleep"]["seconds"] + 20  # drain time
    strategy = deployments()[name]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0  # start-first rollout


def test_the_gpu_variant_asks_for_a_gpu_and_runs_the_gpu_image():
    c = deployments()["poseserve-gpu"]["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["image"].endswith(":gpu")
    assert {"name": "POSE_DEVICE", "value": "cuda"} in c["env"]


def test_disruption_budget_and_autoscaler_target_the_deployment():
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_docs()}
    labels = deployments()["poseserve"]["spec"]["selector"]["matchLabels"]
    assert docs[("PodDisruptionBudget", "poseserve")]["spec"]["selector"]["matchLabels"] == labels
    hpa = docs[("HorizontalPodAutoscaler", "poseserve")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "poseserve" and hpa["minReplicas"] >= 2
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "swarm" / "stack.yml").read_text())


def test_swarm_stack_uses_dns_round_robin_and_safe_rollouts(stack):
    service = stack["services"]["poseserve"]
    deploy = service["deploy"]
    assert deploy["endpoint_mode"] == "dnsrr"  # no VIP / ingress mesh: they need IPVS
    assert deploy["update_config"]["order"] == "start-first" and deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["resources"]["limits"]["cpus"] and deploy["resources"]["limits"]["memory"]
    assert int(service["stop_grace_period"].rstrip("s")) > 20  # longer than uvicorn's drain
    assert "readyz" in " ".join(service["healthcheck"]["test"])
    lb = stack["services"]["lb"]
    assert lb["ports"][0]["mode"] == "host"


def test_the_limits_are_the_ones_measured_under_the_worst_requests(compose, stack):
    """docs/container.md measures the image under these limits (benchmarks/container.py):
    the files and the benchmark must name the same ones, or the measurement proves nothing."""
    from benchmarks.container import DEPLOYMENTS, memory_mb

    measured = {d.name: (d.cpus, d.memory_mb) for d in DEPLOYMENTS}
    s = compose["services"]["poseserve"]
    mem = s["mem_limit"].split(":-")[1].rstrip("}")  # ${POSE_MEMORY:-2g}
    cpus = s["cpus"].split(":-")[1].rstrip("}")
    assert (cpus, memory_mb(mem)) == measured["compose"]
    limits = stack["services"]["poseserve"]["deploy"]["resources"]["limits"]
    assert (limits["cpus"], memory_mb(limits["memory"])) == measured["swarm"]
    pod = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "poseserve.yaml").read_text())
    container = next(d for d in pod if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"} and measured["compose"] == ("2", 2048)


def test_the_balancer_discovers_checks_and_retries():
    cfg = (ROOT / "deploy" / "swarm" / "haproxy" / "haproxy.cfg").read_text()
    assert "server-template" in cfg and "tasks.poseserve:8000" in cfg and "resolvers docker" in cfg
    assert "option httpchk GET /readyz" in cfg
    assert "retry-on conn-failure empty-response" in cfg and "wait-for-body" in cfg


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_the_serving_images_carry_every_module_the_service_imports_from_models(dockerfile):
    from tests.test_layout import SERVING_SAFE

    needed = {f"models/{m.split('.')[1]}.py" for m in SERVING_SAFE if "." in m} | {"models/__init__.py"}
    copied = {w for line in (ROOT / dockerfile).read_text().splitlines() if line.startswith("COPY models/")
              for w in line.split()[1:-1]}
    assert needed <= copied, needed - copied
    allowed = {line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    assert needed <= allowed, needed - allowed
