# The storeops service image: `storeops serve` as a non-root user, state on /var/lib/storeops.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY generator generator
COPY webhook webhook
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --home-dir /var/lib/storeops --create-home storeops
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
ENV STOREOPS_STATE_DIR=/var/lib/storeops \
    STOREOPS_HOST=0.0.0.0 \
    STOREOPS_PORT=8080 \
    HOME=/var/lib/storeops
WORKDIR /var/lib/storeops
EXPOSE 8080
ENTRYPOINT ["storeops"]
CMD ["serve"]
