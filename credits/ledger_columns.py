"""The ledger's and the daily rollup's columns, in the order the bulk writers give their values.

The demo seed and the benchmarks write rows as plain tuples (``COPY`` and ``INSERT``); one
order here keeps each writer's tuples and its column list from drifting apart.
"""

# What a usage row is grouped by, besides its subscription, period and day.
DIMENSIONS = (
    "environment_id",
    "user_id",
    "api_key_id",
    "product_id",
    "agent_id",
    "model",
    "feature",
)
# What a usage event keeps as its sender gave it, besides its dimensions and credits: the
# recording service copies these, the events API shows them.
AS_SENT = (
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "status",
    "session_id",
    "idempotency_key",
)
LEDGER_COLUMNS = (
    "timestamp",
    "recorded_at",
    "kind",
    "subscription_id",
    "period_id",
    *DIMENSIONS,
    "credits",
    "excess_credits",
    *AS_SENT,
    "reason",
)
# The daily rollup's summed columns.
ROLLUP_SUMS = (
    "credits",
    "excess_credits",
    "runs",
    "failed_runs",
    "input_tokens",
    "output_tokens",
    "latency_ms_total",
    "latency_samples",
)
ROLLUP_COLUMNS = ("day", "subscription_id", "period_id", *DIMENSIONS, *ROLLUP_SUMS, "last_event_at")
