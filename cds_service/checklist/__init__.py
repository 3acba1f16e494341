"""The pre-procedure checklist page's back end: signed links, snapshots, FHIR Questionnaire/Response.

`attach_checklist_link` runs on the hook response path (in memory; the snapshot row is written on a
writer thread); the pages themselves live in `cds_service.docs_pages`.
"""

from cds_service.checklist.questionnaire import (
    QUESTIONNAIRE_URL,
    QUESTIONNAIRE_VERSION,
    SECTIONS,
    master_questionnaire,
    questionnaire_response,
)
from cds_service.checklist.service import attach_checklist_link
from cds_service.checklist.token import TokenError

__all__ = [
    "QUESTIONNAIRE_URL",
    "QUESTIONNAIRE_VERSION",
    "SECTIONS",
    "TokenError",
    "attach_checklist_link",
    "master_questionnaire",
    "questionnaire_response",
]
