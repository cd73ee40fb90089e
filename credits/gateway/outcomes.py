"""The one vocabulary of the hot path's outcomes, shared by the views, both backends
(`backends.ServicesBackend`, `backends.SqlBackend`) and the SQL functions
(`credits/gateway/sql/*.sql`, which answer these values as text; a test checks that every value
they answer is a member here). An answer outside it is a logic error, reported as a 500 and
counted as `error`, never as "database unreachable".
"""

from enum import StrEnum


class Outcome(StrEnum):
    # Final answers of authorize and settle.
    OK = "ok"
    REPLAY = "replay"  # the request id was allowed (or settled) before: its first answer again
    CONFLICT = "conflict"  # the request id is another key's (authorize) or settled otherwise
    BAD_KEY = "bad_key"
    FROZEN = "frozen"
    NO_CREDIT = "no_credit"
    ACCOUNT_LIMIT = "account_limit"  # the account's monthly credit limit (issue 18)
    KEY_BUDGET = "key_budget"  # the key's budget for its period
    MODEL_NOT_ALLOWED = "model_not_allowed"  # not in the key's allowed models
    RATE_LIMITED = "rate_limited"  # decided by the limiter, never by the database
    NOT_FOUND = "not_found"  # settle: no hold has this request id
    # Batch settle: this item raised inside its own subtransaction, which undid it (the SQLSTATE
    # is in `status`); the batch's other items are kept.
    ERROR = "error"
    # Not final: the caller decides again another way; the database wrote nothing.
    DUE = "due"  # something on the account has come due (or a hold expired): the services act
    RETRY = "retry"  # the request id was held on another account meanwhile: look again
    SEEN = "seen"  # one-call authorize: the request id exists (the two-step path tells which)
    RETIER = "retier"  # one-call authorize: the live balance is outside the guessed tier
