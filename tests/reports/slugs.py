"""The usage reports as the API names them, stated once for the tests (and on purpose not
read from the catalogue they check)."""

REPORT_SLUGS = [
    "usage-by-user",
    "usage-by-agent",
    "usage-by-model",
    "usage-by-product",
    "usage-by-feature",
    "usage-by-team",
    "usage-by-environment",
    "usage-by-sub-account",
]
