"""The kernel every app builds on: domain errors and the API's one error shape, amounts of
credits (digits, strict parsing, formatting), API plumbing, the read-only admin mixin, the email
retry policy and the periodic-task registration. It imports no app: apps import it."""
