"""What every service family reads: card helpers, isolated rule runs (V2.9), and (as families move here)
the time anchor and bone-health helpers. No family imports another family; shared code lives here.
"""

from hooks.common.cards import DATA_UNAVAILABLE, data_unavailable_card, fmt_date, order_suggestions
from hooks.common.checks import CHECK_FAILED, CHECK_FAILED_DOC, check_failed_card, run_isolated

__all__ = [
    "CHECK_FAILED",
    "CHECK_FAILED_DOC",
    "DATA_UNAVAILABLE",
    "check_failed_card",
    "data_unavailable_card",
    "fmt_date",
    "order_suggestions",
    "run_isolated",
]
