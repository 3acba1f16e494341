"""va-preprocedure service entry point (implementation in the `hooks.preprocedure` package)."""

from hooks.preprocedure import SERVICE_ID, ChecklistItem, checklist_items, service

__all__ = ["SERVICE_ID", "ChecklistItem", "checklist_items", "service"]
