# syntax=docker/dockerfile:1
#
# pgquorum: one static binary on a distroless base, running as a non-root user.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t pgquorum .
#   docker volume create pgquorum-1-data
#   docker run -d --name pgquorum-1 \
#       -v pgquorum-1-data:/var/lib/pgquorum \
#       -v $PWD/pgquorum.yaml:/etc/pgquorum/pgquorum.yaml:ro \
#       -v $PWD/certs:/etc/pgquorum/certs:ro \
#       -v $PWD/admin-token:/etc/pgquorum/admin-token:ro \
#       -p 6432:6432 -p 8008:8008 -p 7001:7001 pgquorum
#   docker stop -t 30 pgquorum-1     # SIGTERM: drain the sessions (shutdown.grace), then stop
#
# The default command reads /etc/pgquorum/pgquorum.yaml (mount it; see
# configs/README.md, "Docker"), with its peer_tls certificates and admin token
# (made with `pgquorum cert`; the proxies refuse to run without them). Listen
# addresses in that file must not be 127.0.0.1 to be reachable from outside the
# container. node.data_dir: /var/lib/pgquorum, a volume: the Raft log must
# survive restarts and `docker rm` (configs/kubernetes uses a PersistentVolume).
#
# PostgreSQL 15, 16 and 17 are supported; the agent image follows PG_MAJOR:
#   docker build --target agent --build-arg PG_MAJOR=17 -t pgquorum-agent:17 .

# The PostgreSQL major version of the agent image (an ARG used in FROM is
# declared before the first FROM).
ARG PG_MAJOR=15

# ---- build: a static binary, no cgo, reproducible paths ----
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Download modules in their own layer, so that a source change does not
# download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/pgquorum ./cmd/pgquorum \
 && mkdir -p /out/data

# ---- agent: `pgquorum agent` beside PostgreSQL, in the PostgreSQL image it
#      runs the server of (configs/kubernetes/postgres.yaml):
#        docker build --target agent -t pgquorum-agent .
#      Runs as "postgres" (uid 999), the data directory's owner. ----
FROM postgres:${PG_MAJOR}-bookworm AS agent
COPY --from=build /out/pgquorum /usr/local/bin/pgquorum
USER postgres
ENTRYPOINT ["/usr/local/bin/pgquorum"]
CMD ["agent"]

# ---- run (the default target): no shell, no package manager; uid/gid 65532 ("nonroot", numeric so
#      that Kubernetes can verify runAsNonRoot) ----
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pgquorum /usr/local/bin/pgquorum
# The Raft log's directory, owned by the user the node runs as, so that a named
# volume mounted there starts with that owner.
COPY --from=build --chown=65532:65532 /out/data /var/lib/pgquorum
VOLUME /var/lib/pgquorum
USER 65532:65532
# 6432 PostgreSQL protocol, 8008 admin HTTP (/healthz, /readyz, /metrics), 7001 Raft
EXPOSE 6432 8008 7001
ENTRYPOINT ["/usr/local/bin/pgquorum"]
CMD ["run", "--config", "/etc/pgquorum/pgquorum.yaml"]
