"""Three va-cds replicas behind HAProxy (round robin, health checks on /ready), one PostgreSQL: what a
health system or a vendor actually runs. Everything is asserted through the balancer, as an EHR sees it.

One topology for the module (starting it is the expensive part); the tests run in file order and the
last one kills a replica.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cds_service.auth import www_authenticate
from cds_service.persistence import Store
from cds_service.persistence.tables import audit, feedback
from tests.pages.helpers import SERVICE_URL, checklist_card, checklist_link, order_sign_request
from tests.pg_server import PostgresServer
from tests.scale.cluster import Balancer, Replica, Signer, TcpGate, free_port, haproxy_binary, wait_until

pytestmark = pytest.mark.postgres

REPLICAS = ("r0", "r1", "r2")
SHARED_KEY = "scale-test-shared-secret-" + "x" * 16


@dataclass
class Cluster:
    lb: Balancer
    replicas: dict[str, Replica]
    gate: TcpGate  # between r2 and PostgreSQL
    signer: Signer
    store: Store  # a direct view of the shared database (what an auditor would query)
    body: dict[str, Any]

    @property
    def public(self) -> str:
        return self.lb.url

    def call(self, client: httpx.Client, hook_instance: str | None = None) -> httpx.Response:
        body = {**self.body, "hookInstance": hook_instance or str(uuid.uuid4())}
        url = self.public + SERVICE_URL
        return client.post(url, json=body, headers=self.signer.headers(url))

    def send_feedback(self, client: httpx.Client, card: str, outcome_at: str) -> httpx.Response:
        url = f"{self.public}{SERVICE_URL}/feedback"
        item = {"card": card, "outcome": "overridden", "outcomeTimestamp": outcome_at}
        return client.post(url, json={"feedback": [item]}, headers=self.signer.headers(url))


@pytest.fixture(scope="module")
def cluster(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    haproxy_binary()  # skip (or, in CI, fail) before starting anything
    tmp = tmp_path_factory.mktemp("scale")
    db_name = f"scale_{uuid.uuid4().hex[:12]}"
    url = pg_server.create_database(db_name)
    store = Store(url)
    store.upgrade()  # as the migration Job does before the replicas start
    signer = Signer()
    gate = TcpGate(pg_server.port)
    base_env = {
        "VA_CDS_AUTH_MODE": "required",
        "VA_CDS_TRUST_FILE": str(signer.write_trust(tmp / "trust.yaml")),
        "VA_CDS_PATIENT_HASH_KEY": SHARED_KEY,
        "VA_CDS_CHECKLIST_LINK_KEY": SHARED_KEY + "-links",
        "VA_CDS_LOG_LEVEL": "WARNING",
    }
    gated_url = url.replace(f":{pg_server.port}/", f":{gate.port}/")
    lb = Balancer(tmp, port=free_port())  # its URL is the public URL every replica signs links with
    replicas = {
        name: Replica(
            name,
            {
                **base_env,
                "VA_CDS_PUBLIC_BASE_URL": lb.url,
                # r2 reaches PostgreSQL through a gate the tests can cut.
                "VA_CDS_DATABASE_URL": gated_url if name == "r2" else url,
            },
            tmp,
        )
        for name in REPLICAS
    }
    try:
        for replica in replicas.values():
            replica.launch()
        lb.start(list(replicas.values()))
        for replica in replicas.values():
            replica.wait_ready()
        lb.wait_states(dict.fromkeys(REPLICAS, "UP"))
        with httpx.Client(timeout=20) as client:
            disc_url = f"{lb.url}/cds-services"
            discovery = client.get(disc_url, headers=signer.headers(disc_url)).json()
        yield Cluster(lb, replicas, gate, signer, store, order_sign_request(discovery))
    finally:
        lb.stop()
        for replica in replicas.values():
            replica.stop()
        gate.cut()
        store.close()


def served_by(resp: httpx.Response) -> str:
    return resp.headers.get("x-served-by", "?")


def fresh_client() -> httpx.Client:
    return httpx.Client(timeout=20)


def test_round_robin_reaches_every_replica(cluster: Cluster) -> None:
    with fresh_client() as client:
        answers = [cluster.call(client) for _ in range(6)]
    assert [r.status_code for r in answers] == [200] * 6
    assert Counter(served_by(r) for r in answers) == dict.fromkeys(REPLICAS, 2)


def test_a_replayed_token_is_refused_whichever_replica_gets_it(cluster: Cluster) -> None:
    url = cluster.public + SERVICE_URL
    token = cluster.signer.token(url)
    headers = {"Authorization": f"Bearer {token}"}
    with fresh_client() as client:
        first = client.post(url, json={**cluster.body, "hookInstance": str(uuid.uuid4())}, headers=headers)
        replays = [
            client.post(url, json={**cluster.body, "hookInstance": str(uuid.uuid4())}, headers=headers)
            for _ in range(6)
        ]
    assert first.status_code == 200, first.text
    assert {served_by(r) for r in replays} == set(REPLICAS)  # every replica saw the replay, including
    assert [r.status_code for r in replays] == [401] * 6  # the two that never saw the token before
    assert {r.headers["www-authenticate"] for r in replays} == {www_authenticate("replayed")}


def test_a_checklist_link_issued_by_one_replica_opens_on_another(cluster: Cluster) -> None:
    with fresh_client() as client:
        hook = cluster.call(client)
        assert hook.status_code == 200, hook.text
        link = checklist_link(hook.json()["cards"])
        assert link.startswith(cluster.public + "/checklist/")
        # Round robin: the very next request goes to the next replica — opened at once, as a quick click.
        page = client.get(link)
    assert served_by(page) != served_by(hook)
    assert page.status_code == 200, page.text[:500]
    assert "checklist" in page.text.lower() and "text/html" in page.headers["content-type"]


def test_feedback_to_another_replica_is_stored_and_reported(cluster: Cluster) -> None:
    with fresh_client() as client:
        hook = cluster.call(client)
        card = checklist_card(hook.json()["cards"])
        fb = cluster.send_feedback(client, card["uuid"], "2026-12-01T05:00:00Z")
    assert fb.status_code == 200, fb.text
    assert served_by(fb) != served_by(hook)
    assert fb.json() == {"received": 1, "stored": 1}

    def reported() -> bool:  # the issuing replica's audit row is written off the response path
        stats = {s.rule_id: s for s in cluster.store.override_report(None)}
        return stats.get("pre.checklist") is not None and stats["pre.checklist"].overridden >= 1

    wait_until(reported, 10, "the override report to attribute the feedback to pre.checklist")


def test_audit_rows_from_every_replica_are_in_the_shared_database(cluster: Cluster) -> None:
    instances = [str(uuid.uuid4()) for _ in range(6)]
    with fresh_client() as client:
        answers = [cluster.call(client, hi) for hi in instances]
    assert {served_by(r) for r in answers} == set(REPLICAS)

    def stored() -> set[str]:
        with cluster.store._transaction("test read") as conn:
            rows = conn.execute(sa.select(audit.c.hook_instance).where(audit.c.hook_instance.in_(instances)))
            return {r[0] for r in rows}

    wait_until(lambda: stored() == set(instances), 10, "an audit row per call, from all three replicas")


def test_a_replica_that_loses_its_database_leaves_the_rotation(cluster: Cluster) -> None:
    cluster.gate.cut()  # r2, and only r2, can no longer reach PostgreSQL
    try:
        cluster.lb.wait_states({"r2": "DOWN", "r0": "UP", "r1": "UP"})
        with fresh_client() as client:
            answers = [cluster.call(client) for _ in range(6)]
        assert [r.status_code for r in answers] == [200] * 6
        assert {served_by(r) for r in answers} == {"r0", "r1"}
    finally:
        cluster.gate.restore()
    cluster.lb.wait_states({"r2": "UP"})  # and comes back once it can


def test_killing_a_replica_under_load_loses_no_acknowledged_feedback(cluster: Cluster) -> None:
    """Four clients send feedback (each item unique) while r0 is SIGKILLed. Whatever was acknowledged
    (200) is in the database; whatever was not, the client retries, as an EHR does; the balancer keeps
    answering throughout."""
    acknowledged: list[str] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + 6.0
    killed = threading.Event()

    def client_loop(n: int) -> None:
        with fresh_client() as client:
            i = 0
            while time.monotonic() < stop_at:
                card = str(uuid.uuid4())
                for _attempt in range(5):  # an unacknowledged item is sent again
                    try:
                        r = cluster.send_feedback(client, card, f"2026-12-01T05:{n:02d}:{i % 60:02d}Z")
                        status = str(r.status_code)
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    with lock:
                        statuses[status] += 1
                    if status == "200":
                        with lock:
                            acknowledged.append(card)
                        break
                    time.sleep(0.05)
                i += 1

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client_loop, n) for n in range(4)]
        time.sleep(2.0)
        cluster.replicas["r0"].kill()
        killed.set()
        for f in futures:
            f.result()
    cluster.lb.wait_states({"r0": "DOWN"})

    with fresh_client() as client:
        after = [cluster.call(client) for _ in range(4)]
    assert [r.status_code for r in after] == [200] * 4  # the balancer keeps answering
    assert {served_by(r) for r in after} == {"r1", "r2"}

    with cluster.store._transaction("test read") as conn:
        stored = {
            r[0] for r in conn.execute(sa.select(feedback.c.card).where(feedback.c.card.in_(acknowledged)))
        }
    assert len(acknowledged) > 20, statuses
    assert set(acknowledged) == stored, f"acknowledged but lost: {set(acknowledged) - stored}"
    # Failures are confined to the few requests in flight on r0 when it died.
    failures = sum(n for s, n in statuses.items() if s != "200")
    assert failures <= 8, statuses


def test_hook_answers_stay_correct_after_failover(cluster: Cluster) -> None:
    with fresh_client() as client:
        r = cluster.call(client)
    assert r.status_code == 200
    assert any(c["extension"]["org.va-cds.rule"] == "pre.checklist" for c in r.json()["cards"])
