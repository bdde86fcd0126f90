# One image for every platform process (`perdure cell run`, `perdure metering run`, the one-shot commands):
# compose.yaml builds it, and any other orchestrator runs it with the PERDURE_* variables of
# docs/operating.md. The base is pinned to a patch release of the minor version pyproject.toml's
# requires-python names, so that a rebuild does not move the interpreter under the platform.

# The dependency list alone, out of pyproject.toml: the install layer below is rebuilt when it
# changes, not when the version, the linters' pins or the source do.
FROM python:3.11.14-slim-bookworm AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
    > /requirements.txt

# Everything is installed into a virtual environment that the runtime stage copies whole: the runtime
# stage never runs pip, so nothing that building needed is left in the shipped image.
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/perdure
ENV PATH=/opt/perdure/bin:$PATH
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install --requirement /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY platform platform
COPY tenants tenants
COPY billing billing
COPY infra infra
RUN pip install --no-deps .

FROM python:3.11.14-slim-bookworm
# A fixed uid, so that an orchestrator's "run as non-root" check can see it without reading /etc/passwd.
RUN groupadd --system --gid 10001 perdure \
    && useradd --system --uid 10001 --gid perdure --home-dir /var/lib/perdure --create-home \
        --shell /usr/sbin/nologin perdure \
    && install --directory --owner perdure --group perdure /var/lib/perdure/billing-exports
# Owned by root: the platform's user (and any worker it starts) can run the code but not change it.
COPY --from=build /opt/perdure /opt/perdure
# PERDURE_STACK_DIR is the platform's state folder: workers' working directories and billing exports
# (the local stack is never run in the image); a named volume at billing-exports keeps the exports.
ENV PATH=/opt/perdure/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PERDURE_STACK_DIR=/var/lib/perdure
USER 10001:10001
WORKDIR /var/lib/perdure
ENTRYPOINT ["perdure"]
CMD ["--help"]
