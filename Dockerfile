# Creditdesk production image (not built on the development machines: no Docker engine there).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CREDITDESK_VAR_DIR=/var/lib/creditdesk
WORKDIR /app

COPY pyproject.toml README.md ./
COPY core core
COPY accounts accounts
COPY credits credits
COPY reports reports
COPY config config
COPY templates templates
COPY manage.py ./
RUN pip install --no-cache-dir . \
    && DEBUG=false SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && useradd --system creditdesk && mkdir -p /var/lib/creditdesk/prometheus \
    && chown -R creditdesk /var/lib/creditdesk
# gunicorn's workers count for /metrics in files here, summed by whichever worker is scraped.
ENV PROMETHEUS_MULTIPROC_DIR=/var/lib/creditdesk/prometheus

USER creditdesk
EXPOSE 8000
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
