"""Error responses: a clear 4xx with an OperationOutcome body that says what is wrong.

CDS Hooks 2.0 defines no error body; an OperationOutcome is harmless to 2.0 clients and is what 3.0 makes
a SHOULD, so every error the service gives is one, with a short human `diagnostics` text.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

# HTTP status → FHIR issue-type code
_ISSUE_CODE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-long",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    500: "exception",
    503: "transient",
}


class ClientError(Exception):
    """Raised inside request handling to answer a 4xx/5xx with a reason."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})


def outcome_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error" if status < 500 or status == 503 else "fatal",
                "code": _ISSUE_CODE.get(status, "processing"),
                "diagnostics": reason,
            }
        ],
    }
    return Response(
        content=orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )
