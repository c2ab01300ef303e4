# The ledger service's image: `ledger serve`, `ledger worker`, `ledger migrate` and every other
# `ledger` command (docker-compose.yml runs them; operating them: docs/runbook.md).
#
# Two stages. The builder makes a wheel of this checkout and installs it with its dependencies
# into a virtual environment (every dependency ships binary wheels, so nothing is compiled). The
# final image receives that environment and nothing else of the build: no compiler, no pip
# cache, no source tree; it runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY ledger ./ledger
COPY migrations ./migrations
COPY policies ./policies
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/venv/bin/pip install /tmp/wheels/ledger-*.whl
# `ledger migrate` reads alembic.ini and migrations/ beside the package (ledger/db/migrate.py),
# and the policies default to policies/ there too (ledger/config.py); the wheel holds none of
# them, so they go into the environment's site-packages, where the code looks.
RUN site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && cp -r alembic.ini migrations policies "$site"/

FROM ${PYTHON_IMAGE}
# uid and gid 999, as the postgres image's postgres user: a restore drill run from this image
# (the compose file's restore-drill service) reads the base backups and the WAL archive that
# PostgreSQL wrote, which are that user's alone.
RUN groupadd --system --gid 999 ledger \
 && useradd --system --uid 999 --gid ledger --home-dir /var/lib/ledger --shell /usr/sbin/nologin ledger \
 && install -d -o ledger -g ledger -m 0700 /var/lib/ledger /var/lib/ledger/spool
COPY --from=builder /opt/venv /opt/venv
# The same files where an operator looks for them: `alembic -c /opt/ledger/alembic.ini` rolls a
# migration back (docs/runbook.md, "Upgrade").
RUN site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && mkdir /opt/ledger \
 && ln -s "$site"/alembic.ini "$site"/migrations "$site"/policies /opt/ledger/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LEDGER_HOME=/var/lib/ledger
WORKDIR /opt/ledger
USER ledger
EXPOSE 8000
# Liveness of `ledger serve`; the compose file checks readiness (/health/ready) instead, and
# gives the worker and migrate services checks of their own.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4)"]
ENTRYPOINT ["ledger"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
