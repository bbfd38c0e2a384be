"""deploy/kubernetes/: every manifest is schema-valid (kubernetes-validate, offline), and they fit together."""
from __future__ import annotations

import glob
import os
from typing import Any

import kubernetes_validate  # the test extra (setup.py): a validator with the schemas bundled, works offline
import pytest
import yaml

from harness import REPO
from uploader.cli import _parser

DEPLOY = os.path.join(REPO, "deploy", "kubernetes")
# The Kubernetes minor whose schemas the manifests are checked against (kubernetes-validate bundles them).
KUBERNETES = "1.30"
# Custom resources: kubernetes-validate has no schema for them. The PrometheusRule is checked by
# tests/test_rules.py instead (it is the rendering of deploy/prometheus/rules.yml, which promtool checks).
CUSTOM_KINDS = {"PrometheusRule"}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            docs += [(os.path.basename(path), doc) for doc in yaml.safe_load_all(f) if doc is not None]
    return docs


def _kind(kind: str) -> dict[str, Any]:
    (doc,) = [doc for _, doc in _documents() if doc["kind"] == kind]
    return doc


@pytest.mark.parametrize("name, doc", [(n, d) for n, d in _documents() if d["kind"] not in CUSTOM_KINDS],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_is_schema_valid(name: str, doc: dict[str, Any]) -> None:
    # strict: a field the schema does not know (a typo, a wrong level) is an error too.
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    daemonset = _kind("DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []  # a typo of volumeMounts
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES, strict=True)


def test_every_kind_is_there() -> None:
    kinds = sorted(doc["kind"] for _, doc in _documents())
    assert kinds == ["ConfigMap", "DaemonSet", "Job", "PrometheusRule", "Service"]


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
            assert path == spool and volume["hostPath"]["path"] == spool
            assert {"configMapRef": {"name": "runai-reporter"}} in container["envFrom"]


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
    service = _kind("Service")
    assert service["spec"]["selector"] == _kind("DaemonSet")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
