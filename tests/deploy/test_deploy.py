"""deploy/: manifests render and validate, carry the production settings, and every metric the
dashboard and the alerts use is one the service exports."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.config import load_settings
from tests.conftest import RunningService
from tools.kustomize import build

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"
# Custom resources (Prometheus Operator, KEDA): no schema in kubernetes-validate, checked below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
# Metrics that come from Prometheus itself rather than from the service.
EXTERNAL_METRICS = {"up"}


def rendered(name: str) -> list[dict[str, Any]]:
    return build(KUBE / name)


def by_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [r for r in resources if r["kind"] == kind]
    return found


@pytest.mark.parametrize("target", ["base", "overlays/example"])
def test_manifests_validate_against_the_kubernetes_schema(target: str) -> None:
    resources = rendered(target)
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"} <= kinds  # fmt: skip
    for res in resources:
        if res["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(res, K8S_VERSION, strict=True)


def test_overlay_sets_namespace_image_replicas_and_config() -> None:
    resources = rendered("overlays/example")
    assert all(r["metadata"]["namespace"] == "switchboard" for r in resources)
    deployment = by_kind(resources, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/voice/switchboard:0.1.0"
    data = by_kind(resources, "ConfigMap")["data"]
    assert data["SWITCHBOARD_EVENT_TOPICS"] == "voice.events,campaign.events"
    assert data["SWITCHBOARD_LOG_FORMAT"] == "json"  # the base's values survive the patch


@pytest.mark.parametrize("target", ["base", "overlays/example"])
def test_configmaps_are_valid_settings(target: str) -> None:
    data = by_kind(rendered(target), "ConfigMap")["data"]
    settings = load_settings({**data, "SWITCHBOARD_ADMIN_TOKEN": "x" * 32})
    assert settings.http_port == 8080


def test_deployment_has_probes_security_and_a_long_enough_grace_period() -> None:
    resources = rendered("base")
    deployment = by_kind(resources, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] >= 2
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    sec = container["securityContext"]
    assert sec["allowPrivilegeEscalation"] is False
    assert sec["readOnlyRootFilesystem"] is True
    assert sec["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    drain = float(by_kind(resources, "ConfigMap")["data"]["SWITCHBOARD_SHUTDOWN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= drain + 15  # drain, leave the group, margin
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    zones = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
    assert "topology.kubernetes.io/zone" in zones
    assert container["envFrom"][0]["configMapRef"]["name"] == "switchboard"
    for name in ("SWITCHBOARD_ADMIN_TOKEN", "SWITCHBOARD_SECRETS_KEY"):
        env = next(e for e in container["env"] if e["name"] == name)
        assert env["valueFrom"]["secretKeyRef"]["name"] == "switchboard"


def test_autoscalers_never_exceed_the_partition_count() -> None:
    hpa = by_kind(rendered("base"), "HorizontalPodAutoscaler")
    partitions = int(hpa["metadata"]["annotations"]["switchboard.io/event-topic-partitions"])
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions
    keda = yaml.safe_load((KUBE / "examples" / "keda-scaledobject.yaml").read_text())
    assert keda["apiVersion"] == "keda.sh/v1alpha1"
    keda_partitions = int(keda["metadata"]["annotations"]["switchboard.io/event-topic-partitions"])
    assert keda["spec"]["maxReplicaCount"] <= keda_partitions
    events, deliveries = keda["spec"]["triggers"]
    assert events["type"] == deliveries["type"] == "kafka"
    assert events["metadata"]["consumerGroup"] == "switchboard"
    assert (deliveries["metadata"]["consumerGroup"], deliveries["metadata"]["topic"]) == (
        "switchboard.retry", "switchboard.deliveries",
    )  # fmt: skip
    # The deliveries topic and the tiers have TOPIC_PARTITIONS partitions: more replicas than
    # that would have no deliveries to make.
    data = by_kind(rendered("base"), "ConfigMap")["data"]
    settings = load_settings({**data, "SWITCHBOARD_ADMIN_TOKEN": "x" * 32})
    assert hpa["spec"]["maxReplicas"] <= settings.topic_partitions
    assert keda["spec"]["maxReplicaCount"] <= settings.topic_partitions


def test_network_policy_denies_cluster_ranges_and_cloud_metadata() -> None:
    policy = by_kind(rendered("base"), "NetworkPolicy")
    assert "Egress" in policy["spec"]["policyTypes"]
    blocks = [to["ipBlock"] for rule in policy["spec"]["egress"] for to in rule.get("to", [])
              if "ipBlock" in to]  # fmt: skip
    v4 = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
    excepted = [ipaddress.ip_network(e) for e in v4["except"]]
    for addr in ("10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1"):
        assert any(ipaddress.ip_address(addr) in net for net in excepted), addr
    kafka = [r for r in policy["spec"]["egress"] if any(p["port"] == 9092 for p in r["ports"])]
    assert kafka, "egress to the Kafka brokers"
    postgres = [r for r in policy["spec"]["egress"] if any(p["port"] == 5432 for p in r["ports"])]
    assert postgres, "egress to the history store"


@pytest.mark.parametrize("target", ["base", "overlays/example"])
def test_the_history_dsn_comes_from_a_secret_never_the_configmap(target: str) -> None:
    resources = rendered(target)
    container = by_kind(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    [dsn] = [e for e in container["env"] if e["name"] == "SWITCHBOARD_HISTORY_DSN"]
    assert dsn["valueFrom"]["secretKeyRef"]["key"] == "dsn"
    for config in (r for r in resources if r["kind"] == "ConfigMap"):
        assert "SWITCHBOARD_HISTORY_DSN" not in config["data"]
        assert not any("postgresql://" in str(v) for v in config["data"].values())


def test_service_monitor_scrapes_the_metrics_port() -> None:
    resources = rendered("base")
    monitor = by_kind(resources, "ServiceMonitor")
    service = by_kind(resources, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert labels.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0] == {
        "port": "http",
        "path": "/metrics",
        "interval": "15s",
    }


def test_dockerfile_is_linted_and_production_shaped() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, check=False, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2  # multi-stage
    assert re.search(r"^USER 10001", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*?/healthz", text, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM", text, re.M)
    assert re.search(r"^EXPOSE 8080", text, re.M)
    assert "org.opencontainers.image.title" in text
    assert (ROOT / ".dockerignore").is_file()


# Dashboard and alerts against a live /metrics scrape


def exported_series(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {"counter": ["_total", "_created"],
                    "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "summary": ["_sum", "_count", "_created"]}.get(family.type, [])  # fmt: skip
        names.update(family.name + s for s in suffixes)
    return names


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


@pytest.fixture
async def scrape(service: RunningService) -> set[str]:
    async with service.http.get(f"{service.base}/metrics") as resp:
        return exported_series(await resp.text())


async def test_every_dashboard_query_uses_exported_metrics(scrape: set[str]) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "switchboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"].replace("$job", "switchboard")
            names = metric_names(expr)
            assert names, (panel["title"], expr)
            missing = names - scrape - EXTERNAL_METRICS
            assert not missing, (panel["title"], missing)
            used |= names
    # The questions the dashboard answers: flowing, failing, behind, and per-pod resources.
    for needed in ("switchboard_events_consumed_total", "switchboard_events_invalid_total",
                   "switchboard_delivery_attempts_total", "switchboard_deliveries_total",
                   "switchboard_delivery_duration_seconds_bucket",
                   "switchboard_end_to_end_latency_seconds_bucket",
                   "switchboard_deliveries_in_flight", "switchboard_consumer_lag",
                   "switchboard_history_indexer_lag_seconds",
                   "switchboard_history_records_indexed_total",
                   "switchboard_history_store_errors_total",
                   "switchboard_history_query_duration_seconds_bucket",
                   "process_cpu_seconds_total", "process_resident_memory_bytes"):  # fmt: skip
        assert needed in used, needed


async def test_every_alert_uses_exported_metrics_and_links_its_runbook(scrape: set[str]) -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    assert rules["kind"] == "PrometheusRule"
    runbook = (ROOT / "docs" / "operations.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    recorded = {r["record"] for g in rules["spec"]["groups"] for r in g["rules"] if "record" in r}
    alerts = []
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            missing = metric_names(rule["expr"]) - scrape - recorded - EXTERNAL_METRICS
            assert not missing, (rule.get("alert") or rule.get("record"), missing)
            if "alert" in rule:
                alerts.append(rule["alert"])
                notes = rule["annotations"]
                assert notes["summary"], rule["alert"]
                assert notes["description"], rule["alert"]
                page, _, anchor = notes["runbook_url"].partition("#")
                assert page == "docs/operations.md"
                assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in the runbook"
                assert rule["labels"]["severity"] in {"page", "ticket"}
    assert {"SwitchboardDeliverySLOFastBurn", "SwitchboardDeliverySLOSlowBurn",
            "SwitchboardConsumerLagGrowing", "SwitchboardOldestIncompleteRecordTooOld",
            "SwitchboardDown", "SwitchboardNotReady", "SwitchboardCommitFailures",
            "SwitchboardDeadLetters", "SwitchboardRetriesOverdue",
            "SwitchboardHistoryIndexerLagging",
            "SwitchboardHistoryStoreErrors"} <= set(alerts)  # fmt: skip


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
