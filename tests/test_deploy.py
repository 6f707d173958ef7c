"""deploy/: every file parses, configs validate, metrics exist, rules pass promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from faregate.proxy import parse_settings
from faregate.proxy import Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def yaml_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s(kind: str) -> dict:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml_docs(path):
            if doc.get("kind") == kind:
                return doc
    raise AssertionError(f"no {kind} in deploy/k8s")


def test_every_yaml_and_json_file_parses():
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        assert yaml_docs(path), path
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())


def test_compose_runs_the_four_services_with_health_checks():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"faregate", "postgres", "prometheus", "grafana"}
    assert services["faregate"]["healthcheck"]["test"]
    assert services["faregate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["healthcheck"]["test"]
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port  # never published on every interface
    stack_config = tomllib.loads((DEPLOY / "faregate.toml").read_text())
    assert stack_config["storage"]["url"].startswith("postgresql://")


def test_both_faregate_configs_are_valid():
    parse_settings(tomllib.loads((DEPLOY / "faregate.toml").read_text()))
    configmap = k8s("ConfigMap")
    parse_settings(tomllib.loads(configmap["data"]["faregate.toml"]))


def test_deployment_probes_security_and_graceful_stop():
    spec = k8s("Deployment")["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    grace = tomllib.loads(k8s("ConfigMap")["data"]["faregate.toml"])["server"]["shutdown_grace_s"]
    assert spec["terminationGracePeriodSeconds"] > grace
    assert k8s("PodDisruptionBudget")["spec"]["minAvailable"] >= 1
    assert k8s("ServiceMonitor")["spec"]["endpoints"][0]["path"] == "/metrics"
    assert k8s("Secret")["stringData"]  # a template: values are placeholders


def test_dockerfile_runs_as_non_root_with_a_healthcheck():
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*healthz", text, flags=re.M | re.S)


def _known_metrics() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        for suffix in ("_total", "_bucket", "_sum", "_count", "_created"):
            names.add(family.name + suffix)
    return names


def test_dashboard_and_rules_use_only_real_metrics():
    known = _known_metrics()
    exprs = []
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "faregate.json").read_text())
    for panel in dashboard["panels"]:
        exprs += [t["expr"] for t in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "faregate-rules.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\bfaregate_[a-z_]+", e)}
    assert used and used <= known, used - known
    assert {"faregate_budget_used_ratio", "faregate_ledger_queue_depth",
            "faregate_requests_total"} <= used


def test_rules_and_config_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    # The token file exists only inside the container: check a copy pointing at a real one.
    token = tmp_path / "faregate_metrics_token"
    token.write_text("t")
    (tmp_path / "faregate-rules.yml").write_text(
        (DEPLOY / "prometheus" / "faregate-rules.yml").read_text())
    config = tmp_path / "prometheus.yml"
    config.write_text((DEPLOY / "prometheus" / "prometheus.yml").read_text().replace(
        "/run/secrets/faregate_metrics_token", str(token)))
    for args in (["check", "rules", str(DEPLOY / "prometheus" / "faregate-rules.yml")],
                 ["check", "config", str(config)]):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def _configs() -> dict[str, dict]:
    return {"deploy/faregate.toml": tomllib.loads((DEPLOY / "faregate.toml").read_text()),
            "deploy/k8s ConfigMap": tomllib.loads(k8s("ConfigMap")["data"]["faregate.toml"])}


def test_no_password_in_a_config_file_or_configmap():
    for where, config in _configs().items():
        url = urlsplit(config["storage"]["url"])
        assert url.scheme == "postgresql" and url.password is None, where
        # A relative path would land in the read-only config directory.
        for path in (config["storage"]["journal_dir"],
                     config.get("capture", {}).get("directory", "/")):
            assert path.startswith("/"), (where, path)
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml_docs(path):
            if doc.get("kind") == "ConfigMap":
                assert not re.search(r"://[^/\s@]+:[^/\s@]+@", json.dumps(doc)), path


def test_k8s_postgres_is_wired_to_a_service_and_the_secret():
    url = urlsplit(_configs()["deploy/k8s ConfigMap"]["storage"]["url"])
    services = {d["metadata"]["name"]: d for p in (DEPLOY / "k8s").glob("*.yaml")
                for d in yaml_docs(p) if d.get("kind") == "Service"}
    database = services[url.hostname]  # "bring your own": a Service to point at it
    assert database["spec"]["type"] == "ExternalName"
    assert "REPLACE_ME" in database["spec"]["externalName"]
    assert "BRING YOUR OWN" in (DEPLOY / "k8s" / "postgres.yaml").read_text()
    secret = k8s("Secret")
    assert set(secret["stringData"]) == {"PGPASSWORD", "FAREGATE_ADMIN_TOKEN",
                                         "FAREGATE_METRICS_TOKEN"}
    [container] = k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    manifests = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_compose_asks_only_for_what_its_config_uses():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    env = services["faregate"]["environment"]
    config = _configs()["deploy/faregate.toml"]
    required = {name for name, value in env.items() if ":?" in str(value)}
    assert config["identity"]["mode"] == "passthrough"
    # passthrough: no upstream key to demand; the metrics token is (it protects /metrics)
    assert required == {"FAREGATE_METRICS_TOKEN"}, required
    # The database password reaches faregate from the same variable as PostgreSQL.
    pg = services["postgres"]["environment"]
    assert env["PGPASSWORD"] == pg["POSTGRES_PASSWORD"] and "${" in pg["POSTGRES_PASSWORD"]
    url = urlsplit(config["storage"]["url"])
    assert (url.hostname, url.username, url.path.lstrip("/")) == (
        "postgres", pg["POSTGRES_USER"], pg["POSTGRES_DB"])


def test_dashboard_titles_say_what_their_queries_show():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "faregate.json").read_text())
    assert dashboard["timezone"] == "utc"  # "today" is the budgets' UTC day
    for panel in dashboard["panels"]:
        title = panel["title"].lower()
        exprs = [t["expr"] for t in panel["targets"]]
        ranged = any("$__range" in e for e in exprs)
        if "today" in title:
            assert panel.get("timeFrom") == "now/d" and ranged, title
        elif ranged:  # the selected range: the title must not claim a fixed one
            assert "range" in title, title
        if "(1h)" in title or "/ hour" in title:
            assert all("[1h]" in e for e in exprs), title
        if "/ s" in title or "per second" in title:
            assert all("rate(" in e for e in exprs), title
        for target in panel["targets"]:
            legend = target.get("legendFormat", "")
            if re.fullmatch(r"p\d+", legend):
                quantile = float("0." + legend[1:])
                assert f"histogram_quantile({quantile}," in target["expr"], (title, legend)


def test_deploy_readme_describes_the_files_that_are_there():
    text = (DEPLOY / "README.md").read_text()
    assert "systemd" not in text and "land here" not in text
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name != "README.md":
            rel = path.relative_to(DEPLOY)
            named = {str(rel), rel.name} | {f"{d}/" for d in rel.parents if str(d) != "."}
            assert any(n in text for n in named), rel


def test_metrics_need_their_token_everywhere_they_are_scraped():
    """deploy/ turns on [server] metrics_token_env, and every scraper presents the token."""
    token_env = "FAREGATE_METRICS_TOKEN"
    for text in ((DEPLOY / "faregate.toml").read_text(), k8s("ConfigMap")["data"]["faregate.toml"]):
        assert parse_settings(tomllib.loads(text)).server.metrics_token_env == token_env
    assert token_env in k8s("Secret")["stringData"]
    auth = k8s("ServiceMonitor")["spec"]["endpoints"][0]["authorization"]
    assert auth["type"] == "Bearer" and auth["credentials"] == {
        "name": "faregate-secrets", "key": token_env}
    annotations = k8s("Deployment")["spec"]["template"]["metadata"].get("annotations") or {}
    assert "prometheus.io/scrape" not in annotations  # an annotation scrape has no token
    [job] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())[
        "scrape_configs"]
    path = job["authorization"]["credentials_file"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert compose["secrets"]["faregate_metrics_token"] == {"environment": token_env}
    assert path == "/run/secrets/faregate_metrics_token"
    assert "faregate_metrics_token" in compose["services"]["prometheus"]["secrets"]
    assert token_env in compose["services"]["faregate"]["environment"]
