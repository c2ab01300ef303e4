"""Who a token speaks for: the four roles, and the sets of them that endpoints admit.

Each set is in the order a refusal names it ("this action needs one of the roles ...").
"""

from __future__ import annotations

__all__ = [
    "ACTORS",
    "ADMIN",
    "ADMINS",
    "AUDITOR",
    "AUDITORS",
    "COMPLIANCE_OFFICER",
    "LAB_MANAGER",
    "READERS",
    "ROLES",
    "SUBMITTERS",
]

LAB_MANAGER = "lab_manager"  # submits manifests; reads only its own labs
COMPLIANCE_OFFICER = "compliance_officer"
AUDITOR = "auditor"  # read-only
ADMIN = "admin"

# Every role, in the order of the tokens table's check constraint (ledger.db.tables).
ROLES = (LAB_MANAGER, COMPLIANCE_OFFICER, AUDITOR, ADMIN)

# Who reads imports, assets, policies and the quarantine (lab managers only their labs').
READERS = ROLES
# Who submits and cancels manifests.
SUBMITTERS = (LAB_MANAGER, ADMIN)
# Who decides quarantined rows: resubmit, dismiss, bulk.
ACTORS = (COMPLIANCE_OFFICER, ADMIN)
# Who reads the chain's head, verification, keys, checkpoints, proofs and the export.
AUDITORS = (AUDITOR, COMPLIANCE_OFFICER, ADMIN)
# Who signs a checkpoint on demand.
ADMINS = (ADMIN,)
