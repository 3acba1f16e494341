"""The shared jti table on SQLite and PostgreSQL: one claim wins, replays lose whichever process asks,
an unreachable database refuses the token (never accepts it unchecked), expired rows go."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from cds_service.auth import AuthError, JwtVerifier, TrustConfig
from cds_service.persistence import Store
from cds_service.persistence.jti import JtiClaimer, JtiStore
from cds_service.persistence.store import StoreUnavailable
from cds_service.scale import JtiPurger, SharedJti
from tests.auth.conftest import AUD, ISS, NOW, TENANT_ISS, Minter, keys, mint, static_jwks, trust

__all__ = ["keys", "mint", "static_jwks", "trust"]  # fixtures borrowed from tests/auth

EXP = NOW + 300


def test_a_jti_is_claimed_once_and_refused_after(store: Store) -> None:
    jti = JtiStore(store)
    assert jti.claim(ISS, "j-1", EXP, NOW) is True
    assert jti.claim(ISS, "j-1", EXP, NOW + 1) is False
    # Same jti from another issuer: another nonce space.
    assert jti.claim(TENANT_ISS, "j-1", EXP, NOW) is True


def test_two_processes_sharing_the_database_cannot_both_claim(store: Store, db_url: str) -> None:
    """Two Store objects (two engines, as two workers have) race on the same 40 jtis from 8 threads:
    each jti is won exactly once."""
    other = Store(db_url)
    try:
        stores = [JtiStore(store), JtiStore(other)]
        barrier = threading.Barrier(8)

        def racer(i: int) -> list[bool]:
            barrier.wait()
            return [stores[i % 2].claim(ISS, f"race-{n}", EXP, NOW) for n in range(40)]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(racer, range(8)))
    finally:
        other.close()
    wins = [sum(r[n] for r in results) for n in range(40)]
    assert wins == [1] * 40


def test_an_expired_row_is_taken_over_and_purged(store: Store) -> None:
    jti = JtiStore(store)
    assert jti.claim(ISS, "old", NOW + 10, NOW)
    # The issuer reuses the jti after that token expired (row not yet purged): a new token, accepted.
    assert jti.claim(ISS, "old", NOW + 400, NOW + 20) is True
    assert jti.claim(ISS, "old", NOW + 400, NOW + 30) is False
    assert jti.claim(ISS, "short", NOW + 5, NOW)
    assert jti.count() == 2
    assert jti.purge(NOW + 100) == 1  # "short" is gone, the reused "old" is live
    assert jti.count() == 1
    assert asyncio.run(JtiPurger(jti, 60, clock=lambda: NOW + 1000).purge_once()) == 1
    assert jti.count() == 0


def _verifier(trust: TrustConfig, http: httpx.AsyncClient, shared: Any) -> JwtVerifier:
    return JwtVerifier(trust, http, clock=lambda: NOW, shared_replay=shared)


def test_a_token_replayed_to_another_worker_is_refused(mint: Minter, trust: TrustConfig, db_url: str) -> None:
    """Two verifiers (two processes' in-memory caches) over one database: the second sees the replay."""
    first, second = Store(db_url), Store(db_url)
    first.upgrade()
    header = "Bearer " + mint()

    async def run() -> None:
        async with httpx.AsyncClient() as http:
            await _verifier(trust, http, shared[0]).verify(header, [AUD])
            with pytest.raises(AuthError) as err:
                await _verifier(trust, http, shared[1]).verify(header, [AUD])
            assert err.value.reason == "replayed"

    shared = [SharedJti(JtiStore(first)), SharedJti(JtiStore(second))]
    try:
        asyncio.run(run())
    finally:
        for s in shared:
            s.close()
        first.close()
        second.close()


class _Down:
    async def claim(self, iss: str, jti: str, expires_at: float, now: float) -> bool:
        raise StoreUnavailable("claiming jti failed: OperationalError: connection refused")


def test_an_unreachable_replay_table_refuses_the_token(mint: Minter, trust: TrustConfig) -> None:
    header = "Bearer " + mint()

    async def run() -> list[str]:
        reasons = []
        async with httpx.AsyncClient() as http:
            verifier = _verifier(trust, http, _Down())
            for _ in range(2):
                with pytest.raises(AuthError) as err:
                    await verifier.verify(header, [AUD])
                reasons.append(err.value.reason)
        return reasons

    # Refused both times for the real reason: the failed check did not leave the jti "seen" locally.
    assert asyncio.run(run()) == ["replay-check-unavailable", "replay-check-unavailable"]


def test_a_full_local_cache_defers_to_the_shared_table(
    mint: Minter, trust: TrustConfig, store: Store
) -> None:
    async def run() -> None:
        async with httpx.AsyncClient() as http:
            verifier = JwtVerifier(trust, http, clock=lambda: NOW, replay_cache_size=1, shared_replay=shared)
            tokens = ["Bearer " + mint() for _ in range(3)]
            for token in tokens:
                await verifier.verify(token, [AUD])  # the local cache is full after the first
            with pytest.raises(AuthError) as err:
                await verifier.verify(tokens[2], [AUD])
            assert err.value.reason == "replayed"

    shared = SharedJti(JtiStore(store))
    try:
        asyncio.run(run())
    finally:
        shared.close()


def test_group_committed_claims_from_many_threads_win_once_each(store: Store) -> None:
    """Claims queued together commit together; a pair queued twice (even in one batch) is won once."""
    claimer = JtiClaimer(JtiStore(store))
    try:
        with ThreadPoolExecutor(8) as pool:
            futures = list(pool.map(lambda n: claimer.submit(ISS, f"batch-{n % 50}", EXP, NOW), range(200)))
        results = [f.result(timeout=30) for f in futures]
    finally:
        claimer.close()
    wins = {f"batch-{n}": 0 for n in range(50)}
    for n, won in enumerate(results):
        wins[f"batch-{n % 50}"] += won
    assert set(wins.values()) == {1}
    with pytest.raises(RuntimeError):
        claimer.submit(ISS, "late", EXP, NOW)


def test_a_failed_claim_batch_fails_every_claim_in_it(db_url: str) -> None:
    store = Store(db_url)  # no schema: the INSERT fails
    claimer = JtiClaimer(JtiStore(store))
    try:
        futures = [claimer.submit(ISS, f"x-{n}", EXP, NOW) for n in range(5)]
        for f in futures:
            with pytest.raises(StoreUnavailable):
                f.result(timeout=30)
    finally:
        claimer.close()
        store.close()
