"""Structured JSON-lines logging with secret redaction, and the one-line-per-request record.

Privacy rules (issue 6): no bearer tokens, JWTs or `fhirAuthorization.access_token` values and no
patient identifiers in logs. Code should simply never log them; `RedactionFilter` is defence in depth
for the day someone does (an exception message quoting a header, a URL with `?access_token=`).
Patient correlation uses `patient_hash`, a keyed hash that cannot be reversed by hashing candidate ids
without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "REQUEST_FIELDS",
    "JsonFormatter",
    "RedactionFilter",
    "configure_logging",
    "log_request",
    "patient_hash",
    "redact",
]

REDACTED = "[REDACTED]"

# JWS/JWE compact serialisations start with base64url('{"') == "eyJ". The second pattern catches
# three long base64url segments without that prefix; the 16-char minimum keeps dotted names such as
# logger names, versions and host names (short labels) from being mangled.
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){2,4}")
_B64_TRIPLE_RE = re.compile(r"\b[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\b")
_AUTH_RE = re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
# key=value, key: value, "key": "value" and URL query forms of token-ish parameters.
_SECRET_KV_RE = re.compile(
    r"""(?P<key>["']?\b(?:access_token|refresh_token|id_token|client_secret|password)["']?\s*[:=]\s*["']?)"""
    r"""(?P<value>[^"'&\s,;}\]]+)""",
    re.IGNORECASE,
)

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "taskName"}
)


def redact(text: str) -> str:
    """`text` with anything that looks like a JWT, an Authorization credential or a token value
    replaced by `[REDACTED]`."""
    text = _JWT_RE.sub(REDACTED, text)
    text = _B64_TRIPLE_RE.sub(REDACTED, text)
    text = _AUTH_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _SECRET_KV_RE.sub(lambda m: f"{m.group('key')}{REDACTED}", text)


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 5:
        return value
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if _is_secret_key(str(k)) else _redact_value(v, depth + 1)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v, depth + 1) for v in value)
    return value


class RedactionFilter(logging.Filter):
    """Scrubs secrets from a record's message, args and extra fields (mutates the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Format first, then redact: "Bearer %s" % opaque_token is only recognisable once combined.
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = ()
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD_ATTRS:
                record.__dict__[name] = REDACTED if _is_secret_key(name) else _redact_value(value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, any extra fields, and exc if present."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRS and name not in out:
                out[name] = value
        if record.exc_info:
            # Tracebacks can quote local values; redact them like messages.
            out["exc"] = redact(self.formatException(record.exc_info))
        # json.dumps escapes newlines, so a message can never split into two log lines (log injection).
        return json.dumps(out, default=str, ensure_ascii=False, separators=(",", ":"))


_URL_LOGGERS = ("httpx", "httpcore")


class _VaCdsHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marker type so `configure_logging` can replace its own handler when called again."""


def configure_logging(level: str) -> None:
    """Install the JSON formatter and redaction filter on the root and uvicorn loggers.

    Idempotent. Other handlers on the root logger (e.g. pytest's capture) are left alone; uvicorn's
    own loggers get only ours and stop propagating, to avoid duplicate lines, and `uvicorn.access` is
    silenced. Run uvicorn with `log_config=None` so it does not reinstall its plain-text handlers afterwards.
    """
    handler = _VaCdsHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # On the handler, not the logger: logger-level filters do not see records propagated from children.
    handler.addFilter(RedactionFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _VaCdsHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.propagate = False
        lg.setLevel(level.upper())
    # uvicorn's access log records every URL, and checklist URLs carry their token (a capability): it stays
    # silent whatever uvicorn was told (`uvicorn app:app` logs access by default). Our own per-request JSON
    # line (no tokens, no patient ids) replaces it.
    access = logging.getLogger("uvicorn.access")
    access.handlers = [logging.NullHandler()]
    access.propagate = False
    access.setLevel(logging.CRITICAL + 1)
    access.disabled = True
    # httpx logs every request URL at INFO and httpcore at DEBUG; FHIR URLs carry patient ids
    # (`Patient/123`, `?patient=123`), which no filter can recognise. Our own code logs fetch outcomes.
    for name in _URL_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def patient_hash(key: bytes, patient_id: str) -> str:
    """Keyed pseudonym for a patient id: HMAC-SHA256, hex, first 16 characters (64 bits).

    64 bits is ample to correlate one deployment's log lines while keeping entries short. Pass ids
    consistently (the bare logical id, as in `context.patientId`).
    """
    return hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


REQUEST_FIELDS = (
    "request_id",
    "service",
    "hook",
    "hook_instance",
    "status",
    "duration_ms",
    "rules",
    "fhir",
    "ignored",  # resources left out as evidence: {"other-patient": n, "future-dated": n} (V2.4/V2.10)
    "patient",
)
_SECRET_KEY_RE = re.compile(r"token|authori[sz]ation|jwt|secret|password|bearer|credential|api_?key", re.I)
_PATIENT_KEY_RE = re.compile(r"patient_?id|mrn|ssn|birth", re.I)
_HASH_RE = re.compile(r"^[0-9a-f]{16}$")


def _is_secret_key(name: str) -> bool:
    return bool(_SECRET_KEY_RE.search(name))


def log_request(logger: logging.Logger, **fields: Any) -> None:
    """Emit the one-line request record (see `REQUEST_FIELDS`) at INFO.

    Keys named like credentials or patient identifiers are dropped, and `patient` must already be a
    `patient_hash` value; the dropped key names (never their values) are listed in `dropped`.
    """
    record: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in fields.items():
        if (
            _is_secret_key(key)
            or (key != "patient" and _PATIENT_KEY_RE.search(key))
            or key in _STANDARD_ATTRS
        ):
            dropped.append(key)
        elif key == "patient" and not (value is None or (isinstance(value, str) and _HASH_RE.match(value))):
            dropped.append(key)
        elif key == "fhir" and isinstance(value, Mapping):
            # Keys are prefetch keys, values outcomes; neither should be a secret, but scrub anyway.
            record[key] = {str(k): _redact_value(v) for k, v in value.items() if not _is_secret_key(str(k))}
        elif value is not None:
            record[key] = value
    if dropped:
        record["dropped"] = sorted(dropped)
    logger.info("request", extra=record)
