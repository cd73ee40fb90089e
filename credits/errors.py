"""Errors of the credit operations. Each maps to one HTTP answer through config.errors."""

from config.errors import ApplicationError, Conflict, NotFound


class InsufficientCredits(ApplicationError):
    status_code = 403
    code = "insufficient_credits"


class AccountFrozen(ApplicationError):
    status_code = 403
    code = "account_frozen"


class AccountLimitExceeded(ApplicationError):
    status_code = 403
    code = "account_limit_exceeded"


class KeyBudgetExceeded(ApplicationError):
    status_code = 403
    code = "key_budget_exceeded"


class ModelNotAllowed(ApplicationError):
    status_code = 403
    code = "model_not_allowed"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class HoldAlreadySettled(Conflict):
    code = "request_already_settled"


class HoldNotFound(NotFound):
    code = "request_not_found"


class LedgerLimitExceeded(ApplicationError):
    """A grant that would take a balance past what the ledger can hold (`MAX_CREDITS`)."""

    code = "amount_too_large"
