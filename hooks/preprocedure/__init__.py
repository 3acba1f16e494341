"""va-preprocedure: pre-procedure safety for vertebral augmentation (rule catalog, `pre.*` rules).

Modules: `scope` (when the service applies; `quick_scope` on the raw context), `prefetch` (templates and
the checks each key feeds), `renal` (creatinine clearance and hold periods), `rules` (one function per
rule id), `checklist` (the master checklist, reusable by the checklist page), `docs` (RuleDocs),
`service` (the ServiceDefinitions, one per hook, and the handler).
"""

from hooks.preprocedure.checklist import ChecklistItem, checklist_items
from hooks.preprocedure.service import SERVICE_IDS, services

__all__ = ["SERVICE_IDS", "ChecklistItem", "checklist_items", "services"]
