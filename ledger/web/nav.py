"""The sections of the UI: each is a page, the roles that may see it (its guard) and how the
navigation names it. The navigation lists the sections the signed-in role may use, so a
section's guard and its link can never disagree.

A new section: add it here (and to NAV, in the order the navigation shows it), and guard its
controller with ``guards=[SECTION.access]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.core import roles
from ledger.services.access import Principal
from ledger.web.guards import PageAccess

__all__ = ["AUDIT", "HOME", "IMPORTS", "NAV", "QUARANTINE", "TOKENS", "UPLOAD", "Section", "visible_sections"]


@dataclass(frozen=True)
class Section:
    title: str  # the link's text, and the page's heading
    path: str
    roles: tuple[str, ...]
    description: str  # one line on the home page
    access: PageAccess = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "access", PageAccess(self.roles))


HOME = Section("Home", "/ui/", roles.ROLES, "What you can do here.")
IMPORTS = Section("Imports", "/ui/imports", roles.READERS, "The manifests submitted, newest first, and how each ended.")
UPLOAD = Section("Upload a manifest", "/ui/imports/new", roles.SUBMITTERS, "Send a manifest; a cut connection resumes.")
QUARANTINE = Section(
    "Quarantine", "/ui/quarantine", roles.READERS, "The rows held back: filter them, correct or dismiss them."
)
AUDIT = Section("Audit", "/ui/audit", roles.AUDITORS, "Verify the chain; take proofs and the export away.")
TOKENS = Section("Tokens", "/ui/tokens", roles.ADMINS, "Create, list and revoke the tokens people sign in with.")

NAV: tuple[Section, ...] = (HOME, IMPORTS, UPLOAD, QUARANTINE, AUDIT, TOKENS)


def visible_sections(principal: Principal | None) -> list[Section]:
    return [s for s in NAV if s.access.admits(principal)]
