"""Typed errors. Each carries the data a log line, an HTTP problem or an exit code needs."""

from __future__ import annotations


class AftersalesError(Exception):
    """Base error. `code` is stable: the scenario runner and the API expose it."""

    code = "error"
    rule: str | None = None

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if rule is not None:
            self.rule = rule

    def __str__(self) -> str:
        return f"{self.message} [rule {self.rule}]" if self.rule else self.message


class InvalidInput(AftersalesError):
    """Malformed or inconsistent input (bad money, unknown line, bad amount)."""

    code = "invalid_input"


class NotFound(AftersalesError):
    code = "not_found"


class ActionNotAllowed(AftersalesError):
    """The rules forbid this action now: wrong status, window closed, once-only used up."""

    code = "not_allowed"

    def __init__(
        self,
        message: str,
        *,
        rule: str | None = None,
        entity: str = "",
        action: str = "",
        status: str = "",
        code: str | None = None,
    ) -> None:
        super().__init__(message, rule=rule)
        self.entity, self.action, self.status = entity, action, status
        if code:
            self.code = code


class WrongActor(ActionNotAllowed):
    """The actor is not a party who may take this action."""

    code = "wrong_actor"


class AmountExceedsPaid(InvalidInput):
    """A refund above what is still refundable: money is never created."""

    code = "amount_exceeds_paid"


class ConcurrencyConflict(AftersalesError):
    """Another action changed the same case or order first; nothing was applied."""

    code = "conflict"


class PolicyError(AftersalesError):
    """A policy pack is malformed or inconsistent."""

    code = "bad_policy"


class NotSupported(AftersalesError):
    """An action of a later issue that this build does not run yet."""

    code = "not_supported"


class FileTooLarge(InvalidInput):
    """An evidence file above the configured size limit; nothing was stored."""

    code = "file_too_large"


class UnsupportedMediaType(InvalidInput):
    """An evidence file whose content (sniffed from its bytes, never its name) is not an
    accepted type: images, PDF or plain text; nothing was stored."""

    code = "unsupported_media_type"
