"""Policy packs: the numbers of the rules, as validated, typed data."""

from aftersales.policy.loader import DEFAULT_POLICY, load
from aftersales.policy.model import Policy

__all__ = ["DEFAULT_POLICY", "Policy", "load"]
