"""Structured logs: JSON lines, redaction of tokens, keyed patient hash, the per-request record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from cds_service.logs import (
    JsonFormatter,
    RedactionFilter,
    configure_logging,
    log_request,
    patient_hash,
    redact,
)

# A real sandbox JWT (public test material) and a typical opaque FHIR access token.
JWT = (
    "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6IjQ0ODIzZjNkLTBiMDEtNGE2Yy1hODBlLWI5ZDNlOGE3MjI2ZiJ9"
    ".eyJpc3MiOiJodHRwczovL3NhbmRib3guY2RzLWhvb2tzLm9yZyIsImp0aSI6IjdiYjAyN2M0In0"
    ".VbCqa56TBAjsOcI2l-lPQIgMoBbxYNdHZ1O0H-X6U7MPJ1P8ZaE5U-gwzkn2cutUgbZOwOntmSfhA_8Wy9cO7vgDjac1vPEFD8SnZ"
)
ACCESS_TOKEN = "sl.AbCdEf0123456789xyzSECRET"
PATIENT_ID = "smart-1288992"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactionFilter())
    logger = logging.getLogger("test.logs.capture")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers = []


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_formatter_emits_one_json_object_per_line(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info("hello %s", "world", extra={"request_id": "r-1", "rules": ["VA-1"]})
    logger.warning("multi\nline\r\nmessage")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    lines = _lines(stream)
    assert len(lines) == 3
    first = lines[0]
    assert (
        first["msg"] == "hello world" and first["level"] == "INFO" and first["logger"] == "test.logs.capture"
    )
    assert first["request_id"] == "r-1" and first["rules"] == ["VA-1"]
    assert isinstance(first["ts"], str) and first["ts"].endswith("+00:00")
    assert lines[1]["msg"] == "multi\nline\r\nmessage"
    assert "RuntimeError: boom" in str(lines[2]["exc"])


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        (f"auth header Bearer {JWT}", ()),
        ("auth header %s", (f"Bearer {JWT}",)),
        ("token %s", (JWT,)),
        ("bare %s in text", (JWT,)),
        ("Authorization: Bearer %s", (ACCESS_TOKEN,)),
        ("fhirAuthorization %s", ({"access_token": ACCESS_TOKEN, "token_type": "Bearer"},)),
        (f'body {{"access_token": "{ACCESS_TOKEN}", "scope": "patient/*.read"}}', ()),
        ("GET %s", (f"/Patient?access_token={ACCESS_TOKEN}&_count=1",)),
        ("%(tok)s", ({"tok": f"access_token={ACCESS_TOKEN}"},)),
    ],
    ids=[
        "jwt-in-msg",
        "bearer-jwt-arg",
        "jwt-arg",
        "jwt-bare",
        "opaque-bearer",
        "dict-arg",
        "json-body",
        "query",
        "mapping-args",
    ],
)
def test_redaction_of_messages_and_args(
    msg: str, args: tuple[object, ...], capture: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = capture
    logger.info(msg, *args)
    out = stream.getvalue()
    assert JWT not in out and JWT.split(".")[0] not in out and JWT.split(".")[2] not in out
    assert ACCESS_TOKEN not in out
    assert "[REDACTED]" in out


def test_redaction_of_extra_fields_and_exceptions(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info("x", extra={"access_token": ACCESS_TOKEN, "headers": {"Authorization": f"Bearer {JWT}"}})
    try:
        raise ValueError(f"bad header Bearer {ACCESS_TOKEN}")
    except ValueError:
        logger.exception("y")
    out = stream.getvalue()
    assert ACCESS_TOKEN not in out and JWT not in out
    assert len(_lines(stream)) == 2


def test_redaction_keeps_ordinary_dotted_text() -> None:
    for text in (
        "cds_service.auth.verifier",
        "https://sandbox.cds-hooks.org/.well-known/jwks.json",
        "version 1.2.3",
        "uvicorn.error",
        "rule VA-ANTICOAG.001.v2 fired",
    ):
        assert redact(text) == text


def test_patient_hash_is_stable_keyed_and_short() -> None:
    a = patient_hash(b"key-1", PATIENT_ID)
    assert a == patient_hash(b"key-1", PATIENT_ID)
    assert a != patient_hash(b"key-2", PATIENT_ID)
    assert a != patient_hash(b"key-1", PATIENT_ID + "x")
    assert len(a) == 16 and all(c in "0123456789abcdef" for c in a)
    assert PATIENT_ID not in a
    # Fixed vector, so a change of algorithm is a deliberate decision (it breaks log correlation).
    # HMAC-SHA256(b"k", b"123") hex, first 16 characters.
    assert patient_hash(b"k", "123") == "54536c9357ebad32"


def test_log_request_record_and_stripping(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    log_request(
        logger,
        request_id="r-9",
        service="va-order-sign",
        hook="order-sign",
        hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        status=200,
        duration_ms=12.5,
        rules=["VA-ANTICOAG-1"],
        fhir={"patient": "prefetch", "meds": "fetched", "labs": "timeout"},
        patient=patient_hash(b"k", PATIENT_ID),
        access_token=ACCESS_TOKEN,
        fhirAuthorization={"access_token": ACCESS_TOKEN},
        jwt=JWT,
        patient_id=PATIENT_ID,
        patientId=PATIENT_ID,
    )
    log_request(logger, request_id="r-10", patient=PATIENT_ID)  # raw id where a hash belongs
    first, second = _lines(stream)
    assert first["msg"] == "request"
    for key in (
        "request_id",
        "service",
        "hook",
        "hook_instance",
        "status",
        "duration_ms",
        "rules",
        "fhir",
        "patient",
    ):
        assert key in first
    assert first["fhir"] == {"patient": "prefetch", "meds": "fetched", "labs": "timeout"}
    assert first["dropped"] == sorted(["access_token", "fhirAuthorization", "jwt", "patient_id", "patientId"])
    assert second["dropped"] == ["patient"] and "patient" not in second
    out = stream.getvalue()
    assert ACCESS_TOKEN not in out and JWT not in out and PATIENT_ID not in out


def test_configure_logging_installs_json_with_redaction(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    uv = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate)
        for n in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    url_levels = {n: logging.getLogger(n).level for n in ("httpx", "httpcore")}
    try:
        configure_logging("info")
        configure_logging("INFO")  # idempotent: still one line per record
        logging.getLogger("cds_service.test").info("call with Bearer %s", JWT)
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", f"/x?access_token={ACCESS_TOKEN}", "1.1", 200
        )
        err = capsys.readouterr().err
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        # uvicorn.access stays silent (issue 16): it would log checklist URLs, whose token is a capability.
        assert [line["logger"] for line in lines] == ["cds_service.test"]
        assert JWT not in err and ACCESS_TOKEN not in err
        # httpx would log FHIR URLs (patient ids) at INFO: silenced below WARNING.
        logging.getLogger("httpx").info("HTTP Request: GET https://fhir.example/Patient/123")
        assert "Patient/123" not in capsys.readouterr().err
    finally:
        for name, lvl in url_levels.items():
            logging.getLogger(name).setLevel(lvl)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, (handlers, propagate) in uv.items():
            logging.getLogger(name).handlers = handlers
            logging.getLogger(name).propagate = propagate
            logging.getLogger(name).disabled = False
            logging.getLogger(name).setLevel(logging.NOTSET)
