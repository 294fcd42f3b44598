# syntax=docker/dockerfile:1
# The operator image: Node 24 LTS, compiled JavaScript, production dependencies only, non-root,
# no shell or package manager at run time (distroless). Kubernetes probes /healthz and /readyz
# on the admin port, so there is no HEALTHCHECK.
ARG NODE_VERSION=24

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bench ./bench
# the same build step the tests run (npm run build = tsc -p tsconfig.json)
RUN npm run build && npm prune --omit=dev

FROM gcr.io/distroless/nodejs${NODE_VERSION}-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="kube-access-gateway" \
      org.opencontainers.image.description="Per-team authenticated access gateways for Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kube-access-gateway/kube-access-gateway"
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
# distroless "nonroot" is UID/GID 65532, as the chart's securityContext expects
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/nodejs/bin/node", "dist/src/cli/main.js"]
CMD ["operator"]
