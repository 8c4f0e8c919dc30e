"""The usage reports as the API names them, stated once for the tests (and on purpose not
read from the catalogue they check)."""

REPORT_SLUGS = [
    "usage-by-user",
    "usage-by-agent",
    "usage-by-model",
    "usage-by-product",
    "usage-by-feature",
    "usage-by-member-feature-credit-type",
    "usage-by-team",
    "usage-by-environment",
    "usage-by-sub-account",
]
# The reports that name each member: on the Pro, Premium and Scale plans only.
PER_MEMBER = ("usage-by-user", "usage-by-member-feature-credit-type", "usage-by-team")
# The columns of usage-by-product, in order: its rows' fields and what it may be ordered by.
USAGE_BY_PRODUCT_COLUMNS = [
    "product",
    "credits_consumed",
    "avg_credits_per_day",
    "excess_credits",
    "share_percent",
    "base_credits",
    "grant_credits",
    "cost",
    "currency",
]
