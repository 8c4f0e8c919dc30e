"""Why an event was refused. Each code is stable and documented in the README."""

from core.errors import DomainError


class CreditLimitExceeded(DomainError):
    code = "credit_limit_exceeded"
    message = "This event would take the subscription beyond its credit limit."


class UserLimitExceeded(DomainError):
    code = "user_limit_exceeded"
    message = "This event would take the user beyond their credit limit."


class TeamLimitExceeded(DomainError):
    code = "team_limit_exceeded"
    message = "This event would take the user's team beyond its credit limit."


class ProductNotEnabled(DomainError):
    code = "product_not_enabled"
    message = "This product is not enabled for the subscription."


class UnknownEnvironment(DomainError):
    code = "unknown_environment"
    message = "No environment with this EnvironmentId is available to this API key."


class NotAMember(DomainError):
    code = "not_a_member"
    message = "This user is not a member of the environment."


class UnknownAgent(DomainError):
    code = "unknown_agent"
    message = "No agent with this id in the subscription."


class PeriodClosed(DomainError):
    code = "period_closed"
    message = "The billing period of this timestamp is closed (its grace window has passed)."


class TimestampInFuture(DomainError):
    code = "timestamp_in_future"
    message = "The timestamp is too far in the future."


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"
    message = "This idempotency key was already used with a different payload."


class InvalidGrant(DomainError):
    code = "invalid_grant"
    message = "This grant cannot be added."


class InvalidPrice(DomainError):
    code = "invalid_price"
    message = "This price cannot be set."
