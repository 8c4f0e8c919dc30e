"""How tasks that send email retry, shared by every app's tasks so that the schedule the
README states is the one that runs."""

# SMTP errors (smtplib.SMTPException) and network failures are all OSErrors: retry them with
# exponential backoff, 30 s doubling to at most an hour: 30 s, 1, 2, 4, 8, 16, 32 min, then
# 1 h three times (ten retries, about 4 h 4 min after the first try), then give up. No jitter:
# Celery's "full jitter" drew each delay anywhere from 0 to that figure (3 s, 1 s, 93 s ...), so
# the schedule the README states was not the one that ran.
EMAIL_RETRY = {
    "autoretry_for": (OSError,),
    "retry_backoff": 30,
    "retry_backoff_max": 3600,
    "retry_jitter": False,
    "max_retries": 10,
}
