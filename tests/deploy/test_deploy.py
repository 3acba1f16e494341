"""The deployment artifacts in deploy/ pass their validators offline — hadolint for the Dockerfile, the
Kubernetes OpenAPI schemas (kubernetes-validate, strict) for the manifests, the Compose Specification schema
(check-jsonschema's vendored copy) for the compose file, `haproxy -c` for the balancer's configuration —
and say what the issue asks of them (probes, non-root, no secrets in layers, migration Job...).

The validators are dev dependencies (pyproject.toml), so they are always there: a missing one is a failure.
Each is also shown a broken file, so a validator that accepts anything would be noticed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.scale.cluster import haproxy_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"validator {name!r} missing: install the dev dependencies (pip install -e '.[dev]')")
        return found
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


# --- Dockerfile ----------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    done = run(tool("hadolint"), "--failure-threshold", "info", str(DEPLOY / "Dockerfile"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\nRUN cd /tmp\n")
    done = run(tool("hadolint"), str(bad))
    assert done.returncode != 0 and "DL3007" in done.stdout  # `latest` tag


def _instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_slim_as_non_root_with_a_health_check_and_no_secrets() -> None:
    ins = _instructions()
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    base = next(rest for w, rest in final if w == "FROM")
    assert "slim" in base and ":latest" not in base
    user = [rest for w, rest in final if w == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    health = [rest for w, rest in final if w == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0]
    # No secret in any layer: no ENV/ARG names a key, password or token, nothing copies an env file.
    for word, rest in ins:
        if word in ("ENV", "ARG"):
            assert not re.search(r"KEY|PASSWORD|SECRET|TOKEN|DATABASE_URL", rest, re.I), rest
        if word in ("COPY", "ADD"):
            assert ".env" not in rest and "trust" not in rest, rest
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    assert "**/.env" in ignore and "**/*.env" in ignore


# --- Kubernetes ----------------------------------------------------------------------------------------


def _manifests() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            docs[doc["kind"]] = doc
    return docs


def test_manifests_pass_the_kubernetes_schemas_strictly() -> None:
    files = sorted(str(p) for p in K8S.glob("*.yaml"))
    done = run(tool("kubernetes-validate"), "--strict", *files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(files)


def test_kubernetes_schemas_catch_a_broken_manifest(tmp_path: Path) -> None:
    doc = yaml.safe_load((K8S / "deployment.yaml").read_text(encoding="utf-8"))
    doc["spec"]["replicas"] = "three"
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/ready"
    bad = tmp_path / "deployment.yaml"
    bad.write_text(yaml.safe_dump(doc))
    done = run(tool("kubernetes-validate"), "--strict", str(bad))
    assert done.returncode != 0


def test_manifests_hold_everything_the_topology_needs() -> None:
    m = _manifests()
    assert set(m) == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
    }
    dep = m["Deployment"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert {e.get("secretRef", {}).get("name") for e in container["envFrom"]} >= {
        m["Secret"]["metadata"]["name"]
    }
    assert {e.get("configMapRef", {}).get("name") for e in container["envFrom"]} >= {
        m["ConfigMap"]["metadata"]["name"]
    }
    # Service, PDB and HPA point at the Deployment's pods.
    assert m["Service"]["spec"]["selector"].items() <= labels.items()
    assert m["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = m["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])
    assert m["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    # The shared keys are in the Secret, never in the ConfigMap (without them start-up is refused).
    assert {"VA_CDS_PATIENT_HASH_KEY", "VA_CDS_CHECKLIST_LINK_KEY", "VA_CDS_DATABASE_URL"} <= set(
        m["Secret"]["stringData"]
    )
    assert not any(re.search("KEY|PASSWORD|DATABASE_URL", k) for k in m["ConfigMap"]["data"])
    job = m["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["db", "upgrade"] and job["image"] == container["image"]


# --- compose + HAProxy ---------------------------------------------------------------------------------


def test_compose_file_passes_the_compose_specification_schema() -> None:
    done = run(
        tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_schema_catches_a_broken_compose_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    # A misspelt service key and a healthcheck that is not an object: both are refused by the schema.
    bad.write_text("services:\n  web:\n    imagee: x\n    healthcheck: curl /health\n")
    done = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad))
    assert done.returncode != 0


def test_compose_runs_replicas_postgresql_haproxy_and_a_migration_first() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = doc["services"]
    assert {"postgres", "migrate", "va-cds", "haproxy"} <= set(services)
    assert services["va-cds"]["deploy"]["replicas"] >= 2
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["va-cds"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "environment" not in services["va-cds"] or not any(
        re.search("KEY|PASSWORD|DATABASE_URL", k) for k in services["va-cds"].get("environment", {})
    )
    assert any("haproxy.cfg" in v for v in services["haproxy"]["volumes"])


def test_compose_haproxy_config_is_valid_and_checks_ready() -> None:
    cfg = DEPLOY / "haproxy.cfg"
    text = cfg.read_text(encoding="utf-8")
    assert "balance roundrobin" in text and "option httpchk GET /ready" in text
    done = run(haproxy_binary(), "-c", "-f", str(cfg))
    assert done.returncode == 0, done.stdout + done.stderr
