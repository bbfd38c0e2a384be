"""deploy/kubernetes/: what `kubectl kustomize` renders is schema-valid (kubernetes-validate, offline), the custom
resources are well formed, and the manifests fit together."""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import urllib.parse
from typing import Any

import kubernetes_validate  # the test extra (setup.py): a validator with the schemas bundled, works offline
import pytest
import yaml

from harness import REPO
from runai.reporter import __version__
from uploader.cli import _parser

DEPLOY = os.path.join(REPO, "deploy", "kubernetes")
# The agent and its Pushgateway; the example job apart, so that applying the first never starts a job.
KUSTOMIZATIONS = (DEPLOY, os.path.join(DEPLOY, "example-job"))
# The Kubernetes minor whose schemas the manifests are checked against (kubernetes-validate bundles them).
KUBERNETES = "1.30"
# The Prometheus Operator's custom resources: kubernetes-validate has no schema for them, _check_custom has
# what the operator requires. The PrometheusRule's rules themselves are promtool's to check (tests/test_rules.py).
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
ENDPOINT_FIELDS = {
    "port",
    "path",
    "interval",
    "scrapeTimeout",
    "scheme",
    "honorLabels",
    "honorTimestamps",
    "relabelings",
    "metricRelabelings",
    "tlsConfig",
    "bearerTokenSecret",
    "basicAuth",
}
RULE_FIELDS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def _render_command(directory: str) -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", directory]
    if shutil.which("kustomize"):
        return ["kustomize", "build", directory]
    raise RuntimeError(
        "neither kubectl nor kustomize is installed: run the README's test command, which installs "
        "Debian's kubernetes-client with apt-get"
    )


@functools.cache
def _rendered(directory: str) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(_render_command(directory), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc is not None)


def _documents() -> list[dict[str, Any]]:
    """Every object of every kustomization here, as kustomize renders it (copies: tests may change them)."""
    return [yaml.safe_load(yaml.safe_dump(doc)) for directory in KUSTOMIZATIONS for doc in _rendered(directory)]


def _kind(kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in _documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def _id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("doc", [d for d in _documents() if d["kind"] not in CUSTOM_KINDS], ids=_id)
def test_manifest_is_schema_valid(doc: dict[str, Any]) -> None:
    # strict: a field the schema does not know (a typo, a wrong level) is an error too.
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    daemonset = _kind("DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []  # a typo of volumeMounts
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES, strict=True)


def test_every_kind_is_there_and_every_file_is_rendered() -> None:
    assert sorted(doc["kind"] for doc in _documents()) == [
        "ConfigMap",
        "DaemonSet",
        "Deployment",
        "Job",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PriorityClass",
        "PrometheusRule",
        "Service",
        "Service",
        "ServiceMonitor",
        "ServiceMonitor",
    ]
    listed = set()
    for directory in KUSTOMIZATIONS:
        with open(os.path.join(directory, "kustomization.yaml"), encoding="utf-8") as f:
            listed |= {os.path.join(directory, name) for name in yaml.safe_load(f)["resources"]}
    files = {path for directory in KUSTOMIZATIONS for path in glob.glob(os.path.join(directory, "*.yaml"))}
    assert listed == {path for path in files if not path.endswith("kustomization.yaml")}


def _check_custom(doc: dict[str, Any]) -> None:
    """What the Prometheus Operator requires of its two kinds here; an AssertionError naming what is wrong."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1", _id(doc)
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, _id(doc)
    spec = doc["spec"]
    if doc["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, _id(doc)
        assert spec["selector"]["matchLabels"] and spec["endpoints"], _id(doc)
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= ENDPOINT_FIELDS and isinstance(endpoint["port"], str), (_id(doc), endpoint)
    else:
        assert set(spec) == {"groups"}, _id(doc)
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"], group
            for rule in group["rules"]:
                assert set(rule) <= RULE_FIELDS and ("alert" in rule) != ("record" in rule), rule
                assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule


@pytest.mark.parametrize("doc", [d for d in _documents() if d["kind"] in CUSTOM_KINDS], ids=_id)
def test_custom_resource_is_well_formed(doc: dict[str, Any]) -> None:
    _check_custom(doc)


def test_a_broken_custom_resource_is_refused() -> None:
    monitor = _kind("ServiceMonitor", "runai-uploader-agent")
    monitor["spec"]["endpoints"][0]["honorLabel"] = True  # a typo of honorLabels
    with pytest.raises(AssertionError):
        _check_custom(monitor)


def test_the_service_monitors_select_their_services_ports() -> None:
    for name in ("runai-uploader-agent", "runai-pushgateway"):
        monitor, service = _kind("ServiceMonitor", name), _kind("Service", name)
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        ports = {port["name"] for port in service["spec"]["ports"]}
        assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= ports
    # The pushed job and podUUID labels are the series' own (docs/dashboards.md, honor_labels).
    assert _kind("ServiceMonitor", "runai-pushgateway")["spec"]["endpoints"][0]["honorLabels"] is True


def _containers(kind: str) -> list[dict[str, Any]]:
    pod = _pod(kind)
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_kustomize_sets_the_image() -> None:
    images = []
    for directory in KUSTOMIZATIONS:
        with open(os.path.join(directory, "kustomization.yaml"), encoding="utf-8") as f:
            images.append(yaml.safe_load(f)["images"])
    assert images[0] == images[1], "the agent and the example job run the same image"
    (image,) = images[0]
    assert image["name"] == "runai-reporter" and image["newTag"] == __version__  # this release's image
    for kind in ("DaemonSet", "Job"):
        assert {c["image"] for c in _containers(kind)} == {f"{image['newName']}:{image['newTag']}"}, kind


def _pod(kind: str) -> dict[str, Any]:
    return _kind(kind)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _spool_mount(pod: dict[str, Any], container: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(where the container mounts the spool volume, the volume)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if "hostPath" in volumes[m["name"]]]
    return mount["mountPath"], volumes[mount["name"]]


def test_agent_and_job_share_the_spool_on_a_host_path() -> None:
    spool = _kind("ConfigMap")["data"]["reporterSpoolDir"]
    for kind in ("DaemonSet", "Job"):
        pod = _pod(kind)
        assert not any("emptyDir" in v for v in pod["volumes"]), f"{kind}: an emptyDir dies with the pod"
        for container in pod["containers"]:
            path, volume = _spool_mount(pod, container)
            assert volume["hostPath"]["path"] == spool
            assert path == spool or kind == "Job"  # the job mounts its own pod's directory alone (below)
            assert {"configMapRef": {"name": "runai-reporter"}} in container["envFrom"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_the_job_mounts_only_its_own_pods_directory_named_in_reporter_pod_dir() -> None:
    pod = _pod("Job")
    (train,) = pod["containers"]
    (mount,) = [m for m in train["volumeMounts"] if "hostPath" in {v["name"]: v for v in pod["volumes"]}[m["name"]]]
    # Only the subdirectory named by the pod's UID: the node's spool root, and every other pod's, unseen.
    assert mount["subPathExpr"] == "$(POD_UID)" and "subPath" not in mount
    env = _env(train)
    uid = {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert env["POD_UID"] == env["podUUID"] == uid  # the directory's name on the host is the pod it reports as
    assert env["reporterPodDir"] == mount["mountPath"]


def test_the_jobs_init_container_makes_the_pod_directory_as_root_with_chown_alone() -> None:
    pod = _pod("Job")
    (init,) = pod["initContainers"]
    mount_path, volume = _spool_mount(pod, init)
    assert volume["hostPath"]["path"] == _kind("ConfigMap")["data"]["reporterSpoolDir"]
    assert "subPathExpr" not in init["volumeMounts"][0]  # the root: where the pod's directory is made
    assert _env(init)["POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    # python3 -c SCRIPT PATH UID GID: the directory given to the pod's own user and group.
    assert init["command"][:2] == ["python3", "-c"]
    compile(init["command"][2], "job.yaml", "exec")
    path, uid, gid = init["command"][3:]
    assert path == f"{mount_path}/$(POD_UID)"
    security = pod["securityContext"]
    assert (int(uid), int(gid)) == (security["runAsUser"], security["runAsGroup"]) and int(uid) != 0
    context = init["securityContext"]
    assert context["runAsUser"] == 0 and context["runAsNonRoot"] is False  # the pod's runAsNonRoot, overridden
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    (train,) = pod["containers"]
    assert "runAsUser" not in train.get("securityContext", {})  # the job itself runs as the pod's user


def test_job_reports_as_its_own_pod() -> None:
    (train,) = _pod("Job")["containers"]
    env = {e["name"]: e for e in train["env"]}
    assert env["podUUID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert "reporterGatewayURL" in _kind("ConfigMap")["data"]
    compile(train["command"][-1], "job.yaml", "exec")  # the example's program is Python


def test_agent_command_is_what_the_cli_takes_and_its_port_is_scrapable() -> None:
    (agent,) = _pod("DaemonSet")["containers"]
    assert agent["command"][:2] == ["runai-uploader", "agent"]
    args = _parser().parse_args(agent["command"][1:])
    (port,) = agent["ports"]
    annotations = _kind("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert args.metrics_port == port["containerPort"] == int(annotations["prometheus.io/port"])
    assert args.metrics_address == "$(POD_IP)"
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in agent["env"]
    service = _kind("Service", "runai-uploader-agent")
    assert service["spec"]["selector"] == _kind("DaemonSet")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_the_configmap_names_the_pushgateway_which_keeps_its_groups() -> None:
    url = urllib.parse.urlsplit(_kind("ConfigMap")["data"]["reporterGatewayURL"])
    service, deployment = _kind("Service", "runai-pushgateway"), _kind("Deployment", "runai-pushgateway")
    (port,) = service["spec"]["ports"]
    assert (url.hostname, url.port) == (service["metadata"]["name"], port["port"])
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # One gateway (two would split the groups), and the old one gone, its file written, before the next starts.
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    assert port["targetPort"] in {p["name"] for p in gateway["ports"]}
    (persistence,) = [a.split("=", 1)[1] for a in gateway["args"] if a.startswith("--persistence.file=")]
    (mount,) = [m for m in gateway["volumeMounts"] if persistence.startswith(m["mountPath"].rstrip("/") + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = _kind("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert "ReadWriteOnce" in claim["spec"]["accessModes"]


def test_the_agent_runs_hardened_with_a_liveness_probe_of_its_loop_and_a_priority() -> None:
    from uploader.agent.config import STALE_SECONDS

    pod = _pod("DaemonSet")
    (agent,) = pod["containers"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert _kind("PriorityClass", pod["priorityClassName"])["value"] > 0
    probe = agent["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": agent["ports"][0]["name"]}
    # The kubelet restarts it only after the loop's own bound, never before it.
    assert probe["periodSeconds"] * probe["failureThreshold"] >= STALE_SECONDS
    assert agent["resources"]["limits"]["memory"]


def test_the_network_policy_admits_only_prometheus_to_the_agents_metrics_port() -> None:
    policy = _kind("NetworkPolicy", "runai-uploader-agent")["spec"]
    assert policy["podSelector"] == _kind("DaemonSet")["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (agent,) = _pod("DaemonSet")["containers"]
    assert rule["ports"] == [{"port": agent["ports"][0]["name"], "protocol": "TCP"}]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
