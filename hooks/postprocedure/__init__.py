"""Post-procedure complication watch after vertebral augmentation (rule catalog, `post.*` rules).

Where things are: `scope` (when the services apply), `prefetch` (templates and the checks each key
feeds), `rules` (one function per rule id — add a post rule there and list it in `RULES`), `context`
(what a rule reads and returns: `RuleContext`, `PostFinding`, `make_finding`), `present`
(findings → cards: folding, loudness, one order per response), `docs` (rule pages), `service` (the two
ServiceDefinitions, encounter-start and patient-view). Timing and bone-health helpers shared with the
discharge service are in `hooks.common.timing` and `hooks.common.bone_health`.
"""

from hooks.postprocedure.service import SERVICE_IDS, services

__all__ = ["SERVICE_IDS", "services"]
