"""/health, /ready and /metrics through the ops router, and the Metrics registry."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cds_service.metrics import Metrics
from cds_service.ops import ops_router
from cds_service.persistence import Store


def make_client(store: Store, metrics: Metrics, checks: Callable[[], dict[str, bool]]) -> TestClient:
    app = FastAPI()
    app.include_router(ops_router(lambda: store, lambda: metrics, checks))
    return TestClient(app)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """One sample's value as a Prometheus scraper would read it from /metrics."""
    body, _ = metrics.render()
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def test_ready_when_database_and_checks_are_fine(store: Store) -> None:
    client = make_client(store, Metrics(), lambda: {"policy": True, "valuesets": True})
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": True, "policy": True, "valuesets": True}}


def test_not_ready_names_the_failed_check(store: Store) -> None:
    client = make_client(store, Metrics(), lambda: {"policy": True, "valuesets": False})
    r = client.get("/ready")
    assert r.status_code == 503
    assert r.json()["failed"] == ["valuesets"]
    assert client.get("/health").status_code == 200  # liveness is unaffected


def test_not_ready_when_the_database_is_unreachable() -> None:
    down = Store("postgresql://postgres@127.0.0.1:1/postgres")
    client = make_client(down, Metrics(), lambda: {"policy": True})
    r = client.get("/ready")
    assert r.status_code == 503
    assert r.json()["failed"] == ["database"]
    assert client.get("/health").status_code == 200
    down.close()


def test_a_crashing_check_means_not_ready_not_a_500(store: Store) -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("value set index corrupt")

    r = make_client(store, Metrics(), broken).get("/ready")
    assert r.status_code == 503
    assert "readiness_checks" in r.json()["failed"]


def test_metrics_endpoint_shows_counters_moving(store: Store) -> None:
    metrics = Metrics()
    client = make_client(store, metrics, dict)

    def scrape() -> dict[str, float]:
        r = client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        return {
            f"{s.name}{sorted(s.labels.items())}": s.value
            for fam in text_string_to_metric_families(r.text)
            for s in fam.samples
        }

    key = "va_cds_requests_total[('hook', 'order-sign'), ('service', 'va-safety'), ('status', '200')]"
    assert key not in scrape()
    metrics.requests_total.labels(service="va-safety", hook="order-sign", status="200").inc()
    metrics.requests_total.labels(service="va-safety", hook="order-sign", status="200").inc()
    metrics.request_seconds.labels(service="va-safety", hook="order-sign").observe(0.042)
    after = scrape()
    assert after[key] == 2
    assert after["va_cds_request_seconds_count[('hook', 'order-sign'), ('service', 'va-safety')]"] == 1
    # 42 ms falls in the 50 ms bucket but not the 25 ms one
    assert (
        after[
            "va_cds_request_seconds_bucket[('hook', 'order-sign'), ('le', '0.05'), ('service', 'va-safety')]"
        ]
        == 1
    )
    assert (
        after[
            "va_cds_request_seconds_bucket[('hook', 'order-sign'), ('le', '0.025'), ('service', 'va-safety')]"
        ]
        == 0
    )


def test_every_counter_the_service_reports_moves() -> None:
    m = Metrics()
    m.cards_total.labels(rule="opioid-mme", indicator="warning").inc()
    m.fhir_fetch_failures_total.labels(key="activeMeds", reason="timeout").inc()
    m.jwt_rejections_total.labels(reason="replayed-jti").inc(3)
    m.feedback_total.labels(outcome="overridden").inc()
    m.audit_write_failures_total.inc()
    assert sample(m, "va_cds_cards_total", rule="opioid-mme", indicator="warning") == 1
    assert sample(m, "va_cds_fhir_fetch_failures_total", key="activeMeds", reason="timeout") == 1
    assert sample(m, "va_cds_jwt_rejections_total", reason="replayed-jti") == 3
    assert sample(m, "va_cds_feedback_total", outcome="overridden") == 1
    assert sample(m, "va_cds_audit_write_failures_total") == 1


def test_two_app_instances_do_not_share_metrics() -> None:
    a, b = Metrics(), Metrics()  # would raise "Duplicated timeseries" with the global registry
    a.audit_write_failures_total.inc()
    assert sample(a, "va_cds_audit_write_failures_total") == 1
    assert sample(b, "va_cds_audit_write_failures_total") == 0
