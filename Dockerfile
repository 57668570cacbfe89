# StreamLimit API image: gunicorn on Python 3.11 slim, non-root, no build tools.
# Built once and used by every service of compose.yaml (migrate, api).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=streamlimit.settings \
    STREAMLIMIT_VAR_DIR=/app/var \
    STREAMLIMIT_STATIC_ROOT=/app/static \
    HOST=0.0.0.0 \
    PORT=8080
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin streamlimit
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# The code and the static files stay root's: the runtime user can read them,
# not change them. Only /app/var (SQLite, a generated key) is its own.
COPY . /app
# The placeholder key exists only for this build step (collectstatic signs
# nothing). Production sets DJANGO_SECRET_KEY.
RUN DJANGO_SECRET_KEY=collectstatic-build-step-placeholder-not-a-secret \
    python manage.py collectstatic --noinput --verbosity 0 \
 && mkdir -p /app/var && chown streamlimit:streamlimit /app/var && chmod 0700 /app/var
USER streamlimit
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "/app/deploy/healthcheck.py"]
ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"]
