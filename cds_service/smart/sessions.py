"""SMART launch sessions in the database, and the secrets sealed inside them.

Why the database: an EHR launch is three browser requests (launch → callback → page/filing) that a load
balancer may send to three different replicas, so everything needed to finish a launch lives in the
`smart_launch_session` row (migration 0005), not in process memory.

Why sealed: the row must hold the PKCE verifier (launch phase) and then the access token (active phase).
Neither is ever stored in the clear. The browser's session cookie is 32 random bytes that the server never
stores; the row's primary key is its SHA-256, and the AES-256-GCM key that seals the secrets is derived
from the cookie *and* the app secret (`VA_CDS_PATIENT_HASH_KEY`). The database alone, a backup or a log of
it cannot open the token; the cookie alone cannot either. Deleting the row (on filing, refusal, expiry or
a new launch's housekeeping) destroys the only copy: the token dies with the session.

The patient id is sealed too (it identifies the patient); the row keeps only the keyed patient hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cds_service.persistence import Store
from cds_service.persistence.tables import BigId, UTCDateTime, metadata

COOKIE_BYTES = 32
_SEAL_CONTEXT = b"va-cds/smart-seal/v1"
_CSRF_CONTEXT = b"va-cds/smart-csrf/v1"

LAUNCHING = "launching"  # authorize redirect sent; waiting for the callback
EXCHANGING = "exchanging"  # the callback claimed the state (single use); token request under way
ACTIVE = "active"  # token obtained and the patient checked; the checklist page is open

smart_launch_session = sa.Table(
    "smart_launch_session",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # sha256(cookie) hex
    sa.Column("state_hash", sa.String(64), nullable=False),  # sha256(OAuth state) hex
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("iss", sa.String(500), nullable=False),
    sa.Column("token_endpoint", sa.String(500), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("snapshot_id", sa.String(32), nullable=True),
    sa.Column("hook_instance", sa.String(64), nullable=True),
    sa.Column("patient_hash", sa.String(128), nullable=True),
    sa.Column("sealed", sa.LargeBinary(), nullable=False),
)

#: The audit line of a filed checklist: which hook call, which patient (keyed hash), which resource.
checklist_filing = sa.Table(
    "checklist_filing",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("hook_instance", sa.String(64), nullable=False, index=True),
    sa.Column("patient_hash", sa.String(128), nullable=True),
    sa.Column("fhir_server", sa.String(500), nullable=False),
    sa.Column("resource", sa.String(500), nullable=False),
    sa.Column("filed_at", UTCDateTime(), nullable=False),
)


def new_cookie() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(COOKIE_BYTES)).rstrip(b"=").decode("ascii")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def session_id(cookie: str) -> str:
    return _sha256(cookie)


def state_hash(state: str) -> str:
    return _sha256(state)


def csrf_token(app_key: bytes, cookie: str) -> str:
    """The form's CSRF token: bound to this browser's session, unknowable without the app secret."""
    return hmac.new(app_key, _CSRF_CONTEXT + cookie.encode("ascii"), hashlib.sha256).hexdigest()


def _aead(app_key: bytes, cookie: str) -> AESGCM:
    return AESGCM(hmac.new(app_key, _SEAL_CONTEXT + cookie.encode("ascii"), hashlib.sha256).digest())


def seal(app_key: bytes, cookie: str, data: dict[str, Any]) -> bytes:
    nonce = secrets.token_bytes(12)
    # The row id as associated data: a sealed blob copied into another row does not open there.
    return nonce + _aead(app_key, cookie).encrypt(nonce, orjson.dumps(data), session_id(cookie).encode())


def unseal(app_key: bytes, cookie: str, blob: bytes) -> dict[str, Any] | None:
    """The sealed data, or None if it does not open with this cookie (wrong cookie, other app secret)."""
    try:
        plain = _aead(app_key, cookie).decrypt(blob[:12], blob[12:], session_id(cookie).encode())
    except (InvalidTag, ValueError):
        return None
    data = orjson.loads(plain)
    return data if isinstance(data, dict) else None


@dataclass(frozen=True, slots=True)
class LaunchSession:
    id: str
    state_hash: str
    phase: str
    iss: str
    token_endpoint: str
    created_at: datetime
    expires_at: datetime
    snapshot_id: str | None
    hook_instance: str | None
    patient_hash: str | None
    sealed: bytes


class SessionStore:
    """Launch sessions and filing records through the app's Store (its engine, pragmas, error mapping).

    Every method is synchronous (call through a thread) and raises StoreUnavailable on database errors.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, session: LaunchSession) -> None:
        """Insert a new launch and drop every expired session (their tokens die with them)."""
        with self._store._transaction("creating SMART launch session") as conn:
            conn.execute(
                sa.delete(smart_launch_session).where(smart_launch_session.c.expires_at < session.created_at)
            )
            conn.execute(sa.insert(smart_launch_session).values(_row(session)))

    def load(self, sid: str) -> LaunchSession | None:
        with self._store._transaction("reading SMART launch session") as conn:
            row = conn.execute(
                sa.select(smart_launch_session).where(smart_launch_session.c.id == sid)
            ).first()
        return None if row is None else LaunchSession(**row._mapping)

    def claim(self, sid: str, state_digest: str) -> bool:
        """Move a launch from `launching` to `exchanging` if its state matches: True exactly once.

        One conditional UPDATE, so two callbacks racing on two replicas cannot both win: a replayed
        `state` finds the phase already moved on.
        """
        with self._store._transaction("claiming SMART launch state") as conn:
            result = conn.execute(
                sa.update(smart_launch_session)
                .where(
                    smart_launch_session.c.id == sid,
                    smart_launch_session.c.state_hash == state_digest,
                    smart_launch_session.c.phase == LAUNCHING,
                )
                .values(phase=EXCHANGING)
            )
        return result.rowcount == 1

    def activate(
        self,
        sid: str,
        *,
        sealed: bytes,
        expires_at: datetime,
        snapshot_id: str,
        hook_instance: str,
        patient_hash: str | None,
    ) -> None:
        with self._store._transaction("activating SMART launch session") as conn:
            conn.execute(
                sa.update(smart_launch_session)
                .where(smart_launch_session.c.id == sid, smart_launch_session.c.phase == EXCHANGING)
                .values(
                    phase=ACTIVE,
                    sealed=sealed,
                    expires_at=expires_at,
                    snapshot_id=snapshot_id,
                    hook_instance=hook_instance,
                    patient_hash=patient_hash,
                )
            )

    def end(self, sid: str) -> None:
        """Delete the session: the sealed token (the only copy) goes with it."""
        with self._store._transaction("ending SMART launch session") as conn:
            conn.execute(sa.delete(smart_launch_session).where(smart_launch_session.c.id == sid))

    def record_filing(
        self, *, hook_instance: str, patient_hash: str | None, fhir_server: str, resource: str, at: datetime
    ) -> None:
        with self._store._transaction("recording checklist filing") as conn:
            conn.execute(
                sa.insert(checklist_filing).values(
                    hook_instance=hook_instance,
                    patient_hash=patient_hash,
                    fhir_server=fhir_server,
                    resource=resource,
                    filed_at=at,
                )
            )

    def filings(self, hook_instance: str) -> list[dict[str, Any]]:
        with self._store._transaction("reading checklist filings") as conn:
            rows = conn.execute(
                sa.select(checklist_filing).where(checklist_filing.c.hook_instance == hook_instance)
            ).all()
        return [dict(r._mapping) for r in rows]


def _row(session: LaunchSession) -> dict[str, Any]:
    return {
        "id": session.id,
        "state_hash": session.state_hash,
        "phase": session.phase,
        "iss": session.iss,
        "token_endpoint": session.token_endpoint,
        "created_at": session.created_at,
        "expires_at": session.expires_at,
        "snapshot_id": session.snapshot_id,
        "hook_instance": session.hook_instance,
        "patient_hash": session.patient_hash,
        "sealed": session.sealed,
    }
