"""The policies the service knows: every file in the policies directory, loaded at start."""

from __future__ import annotations

from pathlib import Path

from ledger.core.policy import Policy, PolicyError, load_policy

__all__ = ["PolicyRegistry", "UnknownPolicy"]

# The ledger's asset projection and history are keyed by these two fields.
REQUIRED_KEY = ("asset_id", "grant_code")


class UnknownPolicy(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no policy named {name!r}; known policies: {', '.join(known) or 'none'}")
        self.name = name


class PolicyRegistry:
    def __init__(self, policies: dict[str, Policy]) -> None:
        self._policies = dict(sorted(policies.items()))

    @classmethod
    def load_dir(cls, directory: Path) -> PolicyRegistry:
        """Load every ``*.json`` policy; a malformed one stops start-up, naming the problem."""
        if not directory.is_dir():
            raise PolicyError(f"policies directory {directory} does not exist")
        policies: dict[str, Policy] = {}
        for path in sorted(directory.glob("*.json")):
            policy = load_policy(path.read_bytes(), source=str(path))
            if policy.name in policies:
                raise PolicyError(f"{path}: policy name {policy.name!r} is used by two files")
            if tuple(policy.key_fields) != REQUIRED_KEY:
                raise PolicyError(
                    f"{path}: primaryKey must be {list(REQUIRED_KEY)} (the ledger keys assets by it), "
                    f"got {list(policy.key_fields)}"
                )
            policies[policy.name] = policy
        if not policies:
            raise PolicyError(f"no policy files (*.json) in {directory}")
        return cls(policies)

    def get(self, name: str) -> Policy:
        try:
            return self._policies[name]
        except KeyError:
            raise UnknownPolicy(name, list(self._policies)) from None

    def all(self) -> list[Policy]:
        return list(self._policies.values())
