"""va-preprocedure: pre-procedure safety for vertebral augmentation (rule catalog v2, `pre.*` rules).

Modules: `scope` (when the services apply, and the time anchor), `prefetch` (templates and the checks each
key feeds), `renal` (creatinine clearance and hold periods), `rules` (one function per rule id → Finding),
`workup` (each work-up item current/scheduled/missing/unreadable), `present` (findings → cards: what stands
alone, what folds, how loud), `checklist` (the master checklist rows and card), `docs` (RuleDocs),
`service` (the ServiceDefinitions, one per hook, and the handler).
"""

from hooks.preprocedure.checklist import ChecklistItem
from hooks.preprocedure.present import checklist_items
from hooks.preprocedure.service import SERVICE_IDS, services

__all__ = ["SERVICE_IDS", "ChecklistItem", "checklist_items", "services"]
