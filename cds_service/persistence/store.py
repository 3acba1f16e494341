"""The Store: audit records and clinician feedback in SQLite (default) or PostgreSQL.

Design points, each because of a requirement in issue 7:

* Feedback is acknowledged only after it is durable: `save_feedback` commits before returning
  (SQLite in WAL mode with `synchronous=FULL`, PostgreSQL with `synchronous_commit=on` forced per
  connection), and every database failure surfaces as `StoreUnavailable` so the endpoint can
  answer 503 and the EHR retries.
* Retries are harmless: feedback is unique per (service, card, outcome, outcome instant) and
  inserted with ON CONFLICT DO NOTHING on both dialects, so a duplicate is neither an error nor a
  second row.
* Every method is synchronous and thread-safe (one pooled connection per call), because the app
  calls it through `anyio.to_thread`.
* Audit records (and checklist snapshots) are not acknowledged to anyone: they are written after the
  hook response, by the group-commit writer (`cds_service.persistence.writer`), many per transaction
  with the same commit settings. A crash can lose the few queued but not yet committed; a write that
  fails is retried on its own and, failing again, logged (the record itself, for audit rows).
  `write_audits` is the batch form, run inside the writer's transaction; `record_audit` the single one.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from cds_service.models import FeedbackItem
from cds_service.persistence.prepared import PreparedSelect
from cds_service.persistence.tables import UTCDateTime, audit, audit_card, feedback

log = logging.getLogger(__name__)

#: rule id under which the override report lists feedback for cards we hold no audit row for.
UNATTRIBUTED = "(no audit record)"
#: `audit_card.memory` of a card alert memory left out of the response (not shown).
OMITTED = "omitted"
#: memory actions that spared the clinician an interruption (counted in the report's repeat burden).
SPARING_ACTIONS = frozenset({"demoted", "suggestion-withheld", OMITTED})

# Chosen so a hung or black-holed database shows up as "unavailable" (503, not ready) within
# seconds instead of pinning worker threads; the EHR retries feedback anyway.
_PG_CONNECT_TIMEOUT_S = 5
_PG_STATEMENT_TIMEOUT_MS = 10_000
_SQLITE_BUSY_TIMEOUT_MS = 5_000
_SQLITE_READ_BUSY_TIMEOUT_MS = 50
#: A `repeat_since` no card can be shown after (repeat memory not asked for).
_NEVER = datetime(9999, 1, 1, tzinfo=UTC)
#: Calls of one chart an alert-memory lookup reads at most (policy `memory.max_calls`).
DEFAULT_RECALL_CALLS = 200
# Alert memory reads on the response path: better no memory than a slow answer (cds_service.memory).
_PG_READ_CONNECT_TIMEOUT_S = 2
_PG_READ_STATEMENT_TIMEOUT_MS = 300
#: Reader connections kept per process: alert memory's MAX_CONCURRENT_LOOKUPS (see `Store._reader`).
_PG_READ_POOL_SIZE = 8
# Arbitrary constant key for pg_advisory_xact_lock: serialises concurrent start-up migrations.
_MIGRATION_LOCK_KEY = 0x7661_6364_7301


class StoreUnavailable(Exception):
    """The database could not be reached or refused the operation; nothing was (fully) written."""


class InvalidFeedback(ValueError):
    """A feedback item passed the wire model but cannot be stored (e.g. month 13 in its timestamp)."""


@dataclass(frozen=True)
class AuditRecord:
    """What the service showed for one hook call. No PHI beyond a keyed hash of the patient id."""

    hook_instance: str
    service_id: str
    hook: str
    received_at: datetime
    duration_ms: float
    patient_hash: str | None
    #: [{"uuid": ..., "rule": rule_id, "indicator": ..., "suggestions": [uuid, ...]}], optionally with
    #: "fingerprint", "memory" (what alert memory did) and "suggestion_keys" (aligned with "suggestions")
    cards: list[dict[str, Any]] = field(default_factory=list)
    #: prefetch key → "prefetched" | "fetched" | "null" | "failed:<reason>" | "operation-outcome"
    fhir_outcomes: dict[str, str] = field(default_factory=dict)
    #: the caller's JWT issuer and tenant; "" when authentication is off or the token names no tenant
    issuer: str = ""
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class FeedbackSeen:
    """One feedback report on a remembered card (bound: same service, issuer and tenant as the card)."""

    outcome: str
    outcome_at: datetime
    reason_code: str | None
    reason_display: str | None
    user_comment: str | None
    accepted_suggestions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecalledCard:
    """A card shown earlier to the same patient, issuer and tenant, with the feedback it got."""

    uuid: str
    rule_id: str
    fingerprint: str
    indicator: str
    shown_at: datetime
    hook: str
    memory: str | None
    suggestions: tuple[str, ...]
    suggestion_keys: tuple[str, ...]
    feedback: tuple[FeedbackSeen, ...] = ()


@dataclass(frozen=True)
class RuleStats:
    """Override analytics for one rule: cards shown and what clinicians did with them."""

    rule_id: str
    shown: int
    #: distinct cards with at least one "accepted" / "overridden" feedback
    accepted: int
    overridden: int
    #: up to three (reason label, distinct cards) pairs, most frequent first
    top_reasons: tuple[tuple[str, int], ...] = ()
    #: cards that repeated an earlier card's fingerprint for the same patient, issuer and tenant
    repeats: int = 0
    #: of those, how many alert memory spared the clinician (demoted, suggestion withheld, omitted)
    spared: int = 0

    @property
    def accept_rate(self) -> float | None:
        return self.accepted / self.shown if self.shown else None

    @property
    def override_rate(self) -> float | None:
        return self.overridden / self.shown if self.shown else None


def _normalise_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from None
    # Bare postgresql:// (and Heroku-style postgres://) would pick psycopg2, which we do not ship.
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return parsed


def _canonical_card_id(value: str) -> str:
    """Lower-case canonical UUID text, so feedback joins audit whatever case the EHR echoes."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value  # not a UUID (a client bug): keep it verbatim rather than lose the feedback


_LEAP_SECOND = re.compile(r"(T|\s)(\d{2}:\d{2}):60")


def parse_outcome_timestamp(value: str) -> datetime:
    """RFC 3339 → aware UTC datetime. A missing offset means UTC, as the spec requires UTC."""
    text = value.strip().upper()
    # RFC 3339 allows a leap second; Python does not. One second off is harmless for analytics.
    text = _LEAP_SECOND.sub(r"\1\2:59", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidFeedback(f"outcomeTimestamp {value!r} is not a valid date-time") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class Store:
    """Audit and feedback persistence over one SQLAlchemy engine (thread-safe)."""

    def __init__(self, url: str, *, pool_size: int = 5, max_overflow: int = 10) -> None:
        """Create the engine; does not connect. Raises ValueError for a malformed/unsupported URL.

        `pool_size`/`max_overflow` bound this process's PostgreSQL connections (pool_size + max_overflow at
        most): what the README's "Running at scale" sizes max_connections by. SQLite ignores them.
        """
        self.url = _normalise_url(url)
        self._dialect = self.url.get_backend_name()
        self._pool = {"pool_size": pool_size, "max_overflow": max_overflow}
        self._engine = self._make_engine(self.url)
        # Reentrant: a transaction helper may be entered again on the same thread (see _sqlite_turn).
        self._turn = threading.RLock() if self._dialect == "sqlite" else None
        self._read_engine: Engine | None = None  # alert memory's reads (see `_reader`), made on first use
        # Built once and reused: constructing a statement (and its cache key) per write showed up in
        # the writer's profile. Executed with a list of rows they are one executemany each.
        self._audit_insert = sa.insert(audit).returning(audit.c.id, sort_by_parameter_order=True)
        # A retried record must not fail on its own cards, hence DO NOTHING on the card uuid.
        self._card_insert = self._insert(audit_card).on_conflict_do_nothing(index_elements=["uuid"])
        self._stored_cards = sa.select(audit_card.c.uuid).where(
            audit_card.c.uuid.in_(sa.bindparam("uuids", expanding=True))
        )
        self._recall = _recall_statement()  # the statement as SQLAlchemy runs it (plan tests EXPLAIN it)
        self._recall_prepared = PreparedSelect(_recall_statement, ("rules", "fingerprints"))

    # ---------------------------------------------------------------------------------------------
    # Engine
    # ---------------------------------------------------------------------------------------------

    def _make_engine(self, url: URL) -> Engine:
        if self._dialect == "sqlite":
            in_memory = url.database in (None, "", ":memory:")
            engine = sa.create_engine(
                url,
                pool_pre_ping=True,
                # The app calls us from a threadpool; connections are not shared concurrently.
                connect_args={"check_same_thread": False},
                # An in-memory database lives in one connection; a pool would give empty databases.
                **({"poolclass": StaticPool} if in_memory else {}),
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = _PG_CONNECT_TIMEOUT_S
        if "options" not in url.query:
            # Forced per connection: a role or server default of synchronous_commit=off would let
            # us acknowledge feedback that a crash can still lose.
            connect_args["options"] = (
                f"-c synchronous_commit=on -c statement_timeout={_PG_STATEMENT_TIMEOUT_MS}"
            )
        return sa.create_engine(
            url, pool_pre_ping=True, pool_timeout=10, connect_args=connect_args, **self._pool
        )

    @contextmanager
    def _transaction(self, what: str, conn: Connection | None = None) -> Iterator[Connection]:
        """One committed transaction (on `conn` if given, else on a pooled connection for its duration);
        any database error becomes StoreUnavailable."""
        with self._sqlite_turn(what):
            try:
                if conn is None:
                    with self._engine.begin() as pooled:
                        yield pooled
                else:
                    with conn.begin():
                        yield conn
            except SQLAlchemyError as exc:
                raise StoreUnavailable(f"{what} failed: {type(exc).__name__}: {_short(exc)}") from exc

    @contextmanager
    def _sqlite_turn(self, what: str) -> Iterator[None]:
        """On SQLite, one transaction of this process at a time (a no-op on PostgreSQL).

        Every SQLite transaction here takes the database's single write lock (BEGIN IMMEDIATE). Threads of
        one process that miss it (the audit writer, the jti claimer, feedback, page reads) would wait in
        SQLite's busy handler, which sleeps 1, 2, 5, 10... ms between tries: measured in-process, a jti claim
        beside a busy audit writer took p50 4.9 ms, p99 75 ms. Queued on this lock instead, the next
        thread starts the moment the previous one commits. Other processes still meet the busy handler.
        """
        if self._turn is None:
            yield
            return
        if not self._turn.acquire(timeout=_SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise StoreUnavailable(f"{what} failed: database busy for {_SQLITE_BUSY_TIMEOUT_MS} ms")
        try:
            yield
        finally:
            self._turn.release()

    def connect(self) -> Connection:
        """A connection of the caller's own, to keep across transactions (the writer thread's).

        Checked out of the pool (so pinged) once; the caller closes it, and replaces it after a
        failure. Raises StoreUnavailable.
        """
        try:
            return self._engine.connect()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"connecting failed: {type(exc).__name__}: {_short(exc)}") from exc

    def _reader(self) -> Engine:
        """The engine for reads on the hook's response path (alert memory): they must fail fast.

        A pool of its own, so a slow or hung database cannot hold the writer's or the feedback endpoint's
        connections, and no pre-ping round trip (a stale connection fails one lookup, which then just has
        no memory). PostgreSQL: a short statement timeout. SQLite file: a 50 ms busy timeout (WAL readers
        do not wait for writers; should the file be locked anyway, give up rather than hold the event loop
        for the writers' 5 s) and no explicit transaction (one SELECT is its own snapshot). In-memory
        SQLite: the main engine, as that database exists on its one connection only (`_read` then sets
        the timeout per read).
        """
        if self._dialect == "sqlite" and self.url.database in (None, "", ":memory:"):
            return self._engine
        if self._read_engine is None:
            if self._dialect == "sqlite":
                engine = sa.create_engine(
                    self.url, pool_size=4, max_overflow=4, connect_args={"check_same_thread": False}
                )
                event.listen(engine, "connect", _sqlite_on_connect)
                event.listen(engine, "connect", _sqlite_reader_on_connect)
                # No BEGIN: the driver is in autocommit (_sqlite_on_connect), and the lookup is one
                # SELECT, which SQLite runs on one consistent snapshot by itself — a round trip saved.
                self._read_engine = engine
            else:
                connect_args: dict[str, Any] = {}
                if "connect_timeout" not in self.url.query:
                    connect_args["connect_timeout"] = _PG_READ_CONNECT_TIMEOUT_S
                if "options" not in self.url.query:
                    connect_args["options"] = f"-c statement_timeout={_PG_READ_STATEMENT_TIMEOUT_MS}"
                # Every connection kept (no overflow): an overflow connection is closed when handed back, so
                # under load each lookup past the 4th paid a new PostgreSQL backend (fork, authentication,
                # cold catalog caches, first planning of the recall statement) — measured in the workers
                # benchmark: ~15 new backends/s at 100 calls/s, the recall statement at ~110 ms instead of
                # 3 ms, PostgreSQL's CPU saturated. The memory limiter (MAX_CONCURRENT_LOOKUPS,
                # cds_service.memory.recall) already caps lookups in flight per process at this number.
                self._read_engine = sa.create_engine(
                    self.url,
                    pool_size=_PG_READ_POOL_SIZE,
                    max_overflow=0,
                    pool_timeout=1,
                    connect_args=connect_args,
                )
        return self._read_engine

    @property
    def reads_inline(self) -> bool:
        """True when a memory read may run on the event loop itself: SQLite, a local file read under a
        millisecond, where a hop to a worker thread costs more than the read (and waits for the GIL while
        the writer thread works). A PostgreSQL read crosses the network: it goes to a thread, with a budget.
        """
        return self._dialect == "sqlite"

    @contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        """A read-only transaction on the reader engine; database errors become StoreUnavailable."""
        engine = self._reader()
        shared = engine is self._engine and self._dialect == "sqlite"  # in-memory: the writers' connection
        try:
            with engine.connect() as conn:
                conn.execution_options(va_cds_read_only=True)
                if shared:
                    _sqlite_pragma(conn, f"busy_timeout={_SQLITE_READ_BUSY_TIMEOUT_MS}")
                try:
                    with conn.begin():
                        yield conn
                finally:
                    if shared:
                        _sqlite_pragma(conn, f"busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"{what} failed: {type(exc).__name__}: {_short(exc)}") from exc

    def _insert(self, table: sa.Table) -> Any:
        # Both dialect insert() constructs offer on_conflict_do_nothing; the generic one does not.
        return postgresql.insert(table) if self._dialect == "postgresql" else sqlite.insert(table)

    # ---------------------------------------------------------------------------------------------
    # Lifecycle
    # ---------------------------------------------------------------------------------------------

    @staticmethod
    def _alembic_config() -> Config:
        cfg = Config()
        script_location = Path(str(resources.files("cds_service.persistence") / "migrations"))
        # ConfigParser interpolation: a literal % in the install path must be doubled.
        cfg.set_main_option("script_location", str(script_location).replace("%", "%%"))
        return cfg

    @classmethod
    def head_revision(cls) -> str:
        """The newest migration shipped with this version (what `upgrade` brings a database to)."""
        head = ScriptDirectory.from_config(cls._alembic_config()).get_current_head()
        if head is None:
            raise RuntimeError("no migrations shipped")
        return head

    def upgrade(self) -> None:
        """Bring the schema to the newest migration. Idempotent; safe on every start-up."""
        cfg = self._alembic_config()
        with self._transaction("schema upgrade") as conn:
            if self._dialect == "postgresql":
                # Several workers may start at once: only one migrates, the others then see head.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                conn.execute(sa.text("SET LOCAL statement_timeout = 0"))  # migrations may be slow
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def ping(self) -> bool:
        """True when the database answers and the schema is in place (readiness)."""
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.select(feedback.c.id).limit(1)).all()
        except SQLAlchemyError as exc:
            log.warning("database ping failed: %s", _short(exc))
            return False
        return True

    def close(self) -> None:
        """Close pooled connections. The Store must not be used afterwards."""
        self._engine.dispose()
        if self._read_engine is not None:
            self._read_engine.dispose()

    # ---------------------------------------------------------------------------------------------
    # Feedback
    # ---------------------------------------------------------------------------------------------

    def save_feedback(
        self,
        service_id: str,
        items: Sequence[FeedbackItem],
        received_at: datetime,
        *,
        issuer: str = "",
        tenant: str = "",
    ) -> int:
        """Store feedback items in one durable transaction; return how many were new.

        `issuer`/`tenant` are the caller's (from its JWT; "" with authentication off). Feedback is stored
        whoever sends it, but it only counts for a card that the same service, issuer and tenant received
        (the override report and alert memory join on all three); anything else is kept like feedback
        about an unknown card. Duplicates (same service, issuer, tenant, card, outcome and outcome
        instant) are skipped silently. Raises
        InvalidFeedback (nothing written) for an impossible timestamp, StoreUnavailable on any
        database error (nothing written); on return the rows are committed.
        """
        rows = [
            {**self._feedback_row(service_id, item, received_at), "issuer": issuer, "tenant": tenant}
            for item in items
        ]
        keys = ["service", "issuer", "tenant", "card", "outcome", "outcome_at"]
        new = 0
        with self._transaction("saving feedback") as conn:
            for row in rows:
                stmt = (
                    self._insert(feedback)
                    .values(**row)
                    .on_conflict_do_nothing(index_elements=keys)
                    # Count RETURNING rows, not rowcount: drivers disagree on rowcount here.
                    .returning(feedback.c.id)
                )
                new += len(conn.execute(stmt).all())
        return new

    @staticmethod
    def _feedback_row(service_id: str, item: FeedbackItem, received_at: datetime) -> dict[str, Any]:
        reason = (item.overrideReason.reason or {}) if item.overrideReason else {}
        comment = item.overrideReason.userComment if item.overrideReason else None

        def text(key: str) -> str | None:
            value = reason.get(key)
            return None if value is None else str(value)

        return {
            "service": service_id,
            "card": _canonical_card_id(item.card),
            "outcome": item.outcome,
            "accepted_suggestions": (
                None
                if item.acceptedSuggestions is None
                else [_canonical_card_id(s.id) for s in item.acceptedSuggestions]
            ),
            "reason_system": text("system"),
            "reason_code": text("code"),
            "reason_display": text("display"),
            "user_comment": comment,
            "outcome_timestamp": item.outcomeTimestamp,
            "outcome_at": parse_outcome_timestamp(item.outcomeTimestamp),
            "received_at": received_at,
        }

    # ---------------------------------------------------------------------------------------------
    # Audit
    # ---------------------------------------------------------------------------------------------

    def record_audit(self, record: AuditRecord) -> None:
        """Store one hook call's audit record with its cards. Raises StoreUnavailable."""
        with self._transaction("writing audit record") as conn:
            self.write_audits(conn, [record])

    def write_audits(self, conn: Connection, records: Sequence[AuditRecord]) -> None:
        """Insert audit records with their cards, in order, inside the transaction open on `conn`.

        Card uuids are fresh per call, so a record whose first card is already stored was stored
        before (a retry after an ambiguous failure, or the same record twice in one batch): it is
        skipped rather than added as an empty duplicate. One SELECT checks the whole batch, one
        executemany inserts the audit rows and one the cards. Raises SQLAlchemyError; the caller's
        transaction then rolls back and nothing of the batch is stored.
        """
        card_ids = [[_canonical_card_id(str(card["uuid"])) for card in r.cards] for r in records]
        firsts = [ids[0] for ids in card_ids if ids]
        seen: set[str] = set()
        if firsts:
            seen.update(conn.execute(self._stored_cards, {"uuids": firsts}).scalars())
        todo: list[tuple[AuditRecord, list[str]]] = []
        for record, ids in zip(records, card_ids, strict=True):
            if ids:
                if ids[0] in seen:
                    continue
                seen.add(ids[0])
            todo.append((record, ids))
        if not todo:
            return
        audit_ids = (
            conn.execute(
                self._audit_insert,
                [
                    {
                        "hook_instance": record.hook_instance,
                        "service": record.service_id,
                        "hook": record.hook,
                        "received_at": record.received_at,
                        "duration_ms": record.duration_ms,
                        "patient_hash": record.patient_hash,
                        "fhir_outcomes": dict(record.fhir_outcomes),
                        "issuer": record.issuer,
                        "tenant": record.tenant,
                    }
                    for record, _ids in todo
                ],
            )
            .scalars()
            .all()
        )
        card_rows = [
            {
                "uuid": uid,
                "audit_id": audit_id,
                "position": position,
                "rule_id": str(card["rule"]),
                "indicator": str(card["indicator"]),
                "suggestions": [str(s) for s in card.get("suggestions") or []],
                "fingerprint": card.get("fingerprint"),
                "memory": card.get("memory"),
                "suggestion_keys": card.get("suggestion_keys"),
            }
            for (record, ids), audit_id in zip(todo, audit_ids, strict=True)
            for position, (card, uid) in enumerate(zip(record.cards, ids, strict=True))
        ]
        if card_rows:
            conn.execute(self._card_insert, card_rows)

    def find_audit(self, hook_instance: str) -> AuditRecord | None:
        """The newest audit record for a hookInstance, or None. Raises StoreUnavailable."""
        with self._transaction("reading audit record") as conn:
            row = conn.execute(
                sa.select(audit)
                .where(audit.c.hook_instance == hook_instance)
                .order_by(audit.c.received_at.desc(), audit.c.id.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            cards = conn.execute(
                sa.select(audit_card).where(audit_card.c.audit_id == row.id).order_by(audit_card.c.position)
            ).all()
        return AuditRecord(
            hook_instance=row.hook_instance,
            service_id=row.service,
            hook=row.hook,
            received_at=row.received_at,
            duration_ms=row.duration_ms,
            patient_hash=row.patient_hash,
            cards=[_card_dict(c) for c in cards],
            fhir_outcomes=dict(row.fhir_outcomes),
            issuer=row.issuer,
            tenant=row.tenant,
        )

    # ---------------------------------------------------------------------------------------------
    # Alert memory
    # ---------------------------------------------------------------------------------------------

    def recall(
        self,
        patient_hash: str,
        issuer: str,
        tenant: str,
        current: Mapping[str, str],
        since: datetime,
        repeat_since: datetime | None,
        *,
        max_calls: int = DEFAULT_RECALL_CALLS,
    ) -> list[RecalledCard]:
        """What alert memory can use about this chart (patient, issuer, tenant), oldest first.

        `current` maps each rule id to the fingerprint of its card in this call. Returned: the cards
        shown since `since` that carry that fingerprint and came after the rule's last card with another
        one (the run of unchanged evidence), each with its bound feedback (same service, issuer and tenant
        as the card: anything else is as if about an unknown card), and only if they got feedback or are
        the rule's latest card shown as a warning since `repeat_since` (None: not asked, the call is not a
        patient-view) — nothing else can change a card. Only the chart's latest `max_calls` calls since
        `since` are read (newest first on `ix_audit_memory`), so a busy chart costs no more than that: what
        lies beyond is forgotten, and a forgotten override or acceptance means a card shown in full, never
        one hidden. One statement, read-only, on the fail-fast reader (`_reader`). Raises StoreUnavailable.
        """
        if not current:
            return []
        params = {
            "patient": patient_hash,
            "issuer": issuer,
            "tenant": tenant,
            "since": since,
            "repeat_since": _NEVER if repeat_since is None else repeat_since,
            "rules": sorted(current),
            "fingerprints": sorted(set(current.values())),
            "max_calls": max_calls,
        }
        with self._read("recalling alert memory") as conn:
            rows = self._recall_prepared.rows(conn, params)
        found: dict[str, tuple[_RecallRow, list[FeedbackSeen]]] = {}
        for row in map(_RecallRow._make, rows):
            held = found.get(row.uuid)
            if held is None:
                held = found[row.uuid] = (row, [])
            if row.outcome is not None:
                held[1].append(
                    FeedbackSeen(
                        outcome=row.outcome,
                        outcome_at=row.outcome_at,
                        reason_code=row.reason_code,
                        reason_display=row.reason_display,
                        user_comment=row.user_comment,
                        accepted_suggestions=tuple(str(x) for x in row.accepted_suggestions or ()),
                    )
                )
        return [
            RecalledCard(
                uuid=row.uuid,
                rule_id=row.rule_id,
                fingerprint=row.fingerprint,
                indicator=row.indicator,
                shown_at=row.received_at,
                hook=row.hook,
                memory=row.memory,
                suggestions=tuple(str(x) for x in row.suggestions or ()),
                suggestion_keys=tuple(str(x) for x in row.suggestion_keys or ()),
                feedback=tuple(seen),
            )
            for row, seen in found.values()
        ]

    # ---------------------------------------------------------------------------------------------
    # Override report
    # ---------------------------------------------------------------------------------------------

    def override_report(self, since: datetime | None) -> list[RuleStats]:
        """Per rule id: cards shown since `since` (all time if None) and their feedback outcomes.

        Feedback is joined to audited cards by card uuid; "accepted"/"overridden" count distinct
        cards, so a card reported twice counts once. Feedback for cards without an audit row is
        reported under UNATTRIBUTED (filtered by when the feedback arrived). Sorted by override
        rate, highest first, because those are the rules to look at. Raises StoreUnavailable.
        """
        # Cards alert memory left out were not shown (they are kept for the repeat-burden column only).
        shown_q = (
            sa.select(audit_card.c.rule_id, sa.func.count())
            .join(audit, audit.c.id == audit_card.c.audit_id)
            .where(sa.or_(audit_card.c.memory.is_(None), audit_card.c.memory != OMITTED))
        )
        # Feedback counts for a card only when it came from the service, issuer and tenant that received
        # the card; any other is reported like feedback about an unknown card (UNATTRIBUTED).
        joined = feedback.join(audit_card, audit_card.c.uuid == feedback.c.card).join(
            audit, sa.and_(audit.c.id == audit_card.c.audit_id, _bound())
        )
        outcome_q = sa.select(
            audit_card.c.rule_id, feedback.c.outcome, sa.func.count(sa.distinct(feedback.c.card))
        ).select_from(joined)
        # Reasons are tallied in Python over distinct (card, reason) rows: a reason is one coded
        # concept whatever display text each client sent, and a card reported twice counts once.
        reason_cols = (
            feedback.c.card,
            feedback.c.reason_system,
            feedback.c.reason_code,
            feedback.c.reason_display,
            feedback.c.user_comment,
        )
        reason_q = (
            sa.select(audit_card.c.rule_id, *reason_cols)
            .distinct()
            .select_from(joined)
            .where(feedback.c.outcome == "overridden")
        )
        orphan = ~sa.exists().where(
            audit_card.c.uuid == feedback.c.card, audit.c.id == audit_card.c.audit_id, _bound()
        )
        orphan_q = sa.select(feedback.c.outcome, sa.func.count(sa.distinct(feedback.c.card))).where(orphan)
        orphan_reason_q = sa.select(*reason_cols).distinct().where(orphan, feedback.c.outcome == "overridden")
        # Repeat burden: per (rule, patient, issuer, tenant, fingerprint) every card after the first is a
        # repeat of the same question on the same data; `memory` says which of them memory spared.
        repeat_q = (
            sa.select(audit_card.c.rule_id, sa.func.count())
            .join(audit, audit.c.id == audit_card.c.audit_id)
            .where(audit_card.c.fingerprint.is_not(None), audit.c.patient_hash.is_not(None))
            .group_by(
                audit_card.c.rule_id,
                audit.c.patient_hash,
                audit.c.issuer,
                audit.c.tenant,
                audit_card.c.fingerprint,
            )
            .having(sa.func.count() > 1)
        )
        spared_q = (
            sa.select(audit_card.c.rule_id, audit_card.c.memory, sa.func.count())
            .join(audit, audit.c.id == audit_card.c.audit_id)
            .where(audit_card.c.memory.is_not(None))
            .group_by(audit_card.c.rule_id, audit_card.c.memory)
        )
        if since is not None:
            repeat_q = repeat_q.where(audit.c.received_at >= since)
            spared_q = spared_q.where(audit.c.received_at >= since)
            shown_q = shown_q.where(audit.c.received_at >= since)
            outcome_q = outcome_q.where(audit.c.received_at >= since)
            reason_q = reason_q.where(audit.c.received_at >= since)
            orphan_q = orphan_q.where(feedback.c.received_at >= since)
            orphan_reason_q = orphan_reason_q.where(feedback.c.received_at >= since)

        tally = _ReasonTally()
        with self._transaction("building override report") as conn:
            shown = {r: n for r, n in conn.execute(shown_q.group_by(audit_card.c.rule_id))}
            outcomes: dict[str, Counter[str]] = defaultdict(Counter)
            for rule, outcome, n in conn.execute(
                outcome_q.group_by(audit_card.c.rule_id, feedback.c.outcome)
            ):
                outcomes[rule][outcome] += n
            for outcome, n in conn.execute(orphan_q.group_by(feedback.c.outcome)):
                outcomes[UNATTRIBUTED][outcome] += n
            for row in conn.execute(reason_q):
                tally.add(*row)
            for orphan_row in conn.execute(orphan_reason_q):
                tally.add(UNATTRIBUTED, *orphan_row)
            repeats: Counter[str] = Counter()
            for rule, n in conn.execute(repeat_q):
                repeats[rule] += n - 1
            spared: Counter[str] = Counter()
            for rule, memory, n in conn.execute(spared_q):
                if set(str(memory).split(",")) & SPARING_ACTIONS:
                    spared[rule] += n

        stats = [
            RuleStats(
                rule_id=rule,
                shown=shown.get(rule, 0),
                accepted=outcomes[rule]["accepted"],
                overridden=outcomes[rule]["overridden"],
                top_reasons=tally.top(rule, 3),
                repeats=repeats[rule],
                spared=spared[rule],
            )
            for rule in sorted(set(shown) | set(outcomes))
        ]
        stats.sort(key=lambda s: (s.rule_id == UNATTRIBUTED, -(s.override_rate or 0.0), s.rule_id))
        return stats


def _card_dict(c: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "uuid": c.uuid,
        "rule": c.rule_id,
        "indicator": c.indicator,
        "suggestions": list(c.suggestions),
    }
    # Alert-memory columns only when set, so a record written without them reads back as written.
    for key in ("fingerprint", "memory", "suggestion_keys"):
        value = getattr(c, key)
        if value is not None:
            out[key] = list(value) if key == "suggestion_keys" else value
    return out


def _bound() -> sa.ColumnElement[bool]:
    """Feedback joined to an audit row: sent by the service, issuer and tenant that received the card."""
    return sa.and_(
        feedback.c.service == audit.c.service,
        feedback.c.issuer == audit.c.issuer,
        feedback.c.tenant == audit.c.tenant,
    )


class _RecallRow(NamedTuple):
    """A row of the memory lookup, in the order `_recall_statement` selects (a test keeps them in step)."""

    uuid: str
    rule_id: str
    fingerprint: str
    indicator: str
    memory: str | None
    suggestions: list[Any] | None
    suggestion_keys: list[Any] | None
    received_at: datetime
    hook: str
    outcome: str | None
    outcome_at: datetime
    reason_code: str | None
    reason_display: str | None
    user_comment: str | None
    accepted_suggestions: list[Any] | None


def _values(name: str, lengths: Mapping[str, int] | None) -> Any:
    """The bound list `name`: one expanding parameter, or `lengths[name]` parameters `<name>_<i>`."""
    if lengths is None:
        return sa.bindparam(name, expanding=True)
    return [sa.bindparam(f"{name}_{i}") for i in range(lengths[name])]


def _recall_statement(lengths: Mapping[str, int] | None = None) -> sa.Select[Any]:
    """The memory lookup (see `Store.recall`). Evidence order is by `audit.id` (insert order), which stays
    right when replicas' clocks disagree by a little. `lengths` (for `PreparedSelect`): the number of rules
    and fingerprints, bound one parameter each; None: expanding parameters (the form EXPLAIN tests read)."""
    chart = sa.and_(
        audit.c.patient_hash == sa.bindparam("patient"),
        audit.c.issuer == sa.bindparam("issuer"),
        audit.c.tenant == sa.bindparam("tenant"),
        audit.c.received_at >= sa.bindparam("since", type_=UTCDateTime()),
    )
    # The chart's latest calls in the window, newest first on ix_audit_memory (patient, issuer, tenant,
    # received_at), at most `max_calls`: without the bound a chart's every call made each lookup longer.
    latest = (
        sa.select(audit.c.id)
        .where(chart)
        .order_by(audit.c.received_at.desc())
        .limit(sa.bindparam("max_calls", type_=sa.Integer()))
        .scalar_subquery()
    )
    # Every card of the rules asked about in those calls: the calls by primary key, their cards by audit_id.
    shown = (
        sa.select(
            audit_card.c.uuid,
            audit_card.c.rule_id,
            audit_card.c.fingerprint,
            audit_card.c.indicator,
            audit_card.c.memory,
            audit_card.c.suggestions,
            audit_card.c.suggestion_keys,
            audit_card.c.position,
            audit.c.id.label("audit_id"),
            audit.c.received_at,
            audit.c.hook,
            audit.c.service,
            audit.c.issuer,
            audit.c.tenant,
        )
        .select_from(audit.join(audit_card, audit_card.c.audit_id == audit.c.id))
        .where(
            audit.c.id.in_(latest),  # (the chart's rows only: `latest` is the only way in)
            audit_card.c.rule_id.in_(_values("rules", lengths)),
            audit_card.c.fingerprint.is_not(None),
        )
        .cte("shown")
    )
    fingerprints = _values("fingerprints", lengths)
    # Per rule, the last call whose card had other evidence: only the cards after it still count.
    changed = (
        sa.select(shown.c.rule_id, sa.func.max(shown.c.audit_id).label("last_change"))
        .where(shown.c.fingerprint.not_in(fingerprints))
        .group_by(shown.c.rule_id)
        .cte("changed")
    )
    # Per rule, the latest card shown as a warning since `repeat_since` (a patient-view repeat needs no more).
    repeated = (
        sa.select(shown.c.rule_id, sa.func.max(shown.c.audit_id).label("last_warning"))
        .where(
            shown.c.fingerprint.in_(fingerprints),
            shown.c.indicator == "warning",
            shown.c.received_at >= sa.bindparam("repeat_since", type_=UTCDateTime()),
        )
        .group_by(shown.c.rule_id)
        .cte("repeated")
    )
    bound = sa.and_(
        feedback.c.card == shown.c.uuid,
        feedback.c.service == shown.c.service,
        feedback.c.issuer == shown.c.issuer,
        feedback.c.tenant == shown.c.tenant,
    )
    return (
        sa.select(
            shown.c.uuid,
            shown.c.rule_id,
            shown.c.fingerprint,
            shown.c.indicator,
            shown.c.memory,
            shown.c.suggestions,
            shown.c.suggestion_keys,
            shown.c.received_at,
            shown.c.hook,
            feedback.c.outcome,
            feedback.c.outcome_at,
            feedback.c.reason_code,
            feedback.c.reason_display,
            feedback.c.user_comment,
            feedback.c.accepted_suggestions,
        )
        .select_from(
            shown.outerjoin(changed, changed.c.rule_id == shown.c.rule_id)
            .outerjoin(repeated, repeated.c.rule_id == shown.c.rule_id)
            .outerjoin(feedback, bound)
        )
        .where(
            shown.c.fingerprint.in_(fingerprints),
            sa.or_(changed.c.last_change.is_(None), shown.c.audit_id > changed.c.last_change),
            sa.or_(feedback.c.id.is_not(None), shown.c.audit_id == repeated.c.last_warning),
        )
        .order_by(shown.c.audit_id, shown.c.position, feedback.c.id)
    )


class _ReasonTally:
    """Counts distinct overridden cards per (rule, reason) and picks a readable label per reason."""

    def __init__(self) -> None:
        self._cards: dict[str, dict[tuple[str, ...], set[str]]] = defaultdict(lambda: defaultdict(set))
        self._labels: dict[tuple[str, ...], str] = {}

    def add(
        self,
        rule: str,
        card: str,
        system: str | None,
        code: str | None,
        display: str | None,
        comment: str | None,
    ) -> None:
        key: tuple[str, ...]
        if code and code.strip():
            # A coded reason is one concept whatever display text (if any) each client sent;
            # it is named by a display when any client sent one, else by its code.
            key = ("coded", system or "", code.strip())
            if display and display.strip():
                self._labels[key] = display.strip()
            else:
                self._labels.setdefault(key, code.strip())
        elif comment and comment.strip():
            key = ("comment", comment.strip())
            self._labels[key] = comment.strip()
        else:
            key = ("none",)
            self._labels[key] = "(no reason given)"
        self._cards[rule][key].add(card)

    def top(self, rule: str, n: int) -> tuple[tuple[str, int], ...]:
        counts: Counter[str] = Counter()
        for key, cards in self._cards.get(rule, {}).items():
            counts[self._labels[key]] += len(cards)
        return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def _short(exc: BaseException) -> str:
    # SQLAlchemy messages embed the full SQL and a help link; the first line says what went wrong.
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # We issue BEGIN ourselves (see _sqlite_on_begin): pysqlite's implicit transactions skip DDL,
    # which would make migrations non-atomic.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        # WAL + FULL: a commit is fsynced to the WAL before it returns, so acknowledged feedback
        # survives a crash of the process (and of the OS), and readers don't block the writer.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_reader_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # After _sqlite_on_connect: the memory reader's connections give up on a lock fast (see Store._reader).
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_READ_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    # On the driver connection (autocommit, see _sqlite_on_connect): through SQLAlchemy it would begin
    # a transaction of its own first.
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front. With a deferred BEGIN, a transaction that reads and then
    # writes (write_audits' retry check) fails at once with "database is locked" when another connection
    # commits in between: WAL cannot upgrade a stale read snapshot, and the busy timeout does not apply.
    # A read-only transaction (alert memory, on the response path) never writes, so it begins DEFERRED and
    # does not queue behind the writer thread for the write lock.
    if conn.get_execution_options().get("va_cds_read_only"):
        conn.exec_driver_sql("BEGIN")
        return
    conn.exec_driver_sql("BEGIN IMMEDIATE")
