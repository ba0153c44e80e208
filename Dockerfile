# syntax=docker/dockerfile:1
#
# pgquorum: one static binary on a distroless base, running as a non-root user.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t pgquorum .
#   docker run --rm -v $PWD/pgquorum.yaml:/etc/pgquorum/pgquorum.yaml:ro \
#       -v $PWD/certs:/etc/pgquorum/certs:ro \
#       -p 6432:6432 -p 8008:8008 -p 7001:7001 pgquorum
#
# The default command reads /etc/pgquorum/pgquorum.yaml (mount it; see
# configs/README.md), with its peer_tls certificates and admin token (made with
# `pgquorum cert`; the proxies refuse to run without them). Listen addresses in that file must not be 127.0.0.1 to be
# reachable from outside the container. Keep node.data_dir on a volume: the
# Raft log must survive restarts (configs/kubernetes uses a PersistentVolume).

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
        -o /out/pgquorum ./cmd/pgquorum

# ---- agent: `pgquorum agent` beside PostgreSQL, in the PostgreSQL image it
#      runs the server of (configs/kubernetes/postgres.yaml):
#        docker build --target agent -t pgquorum-agent .
#      Runs as "postgres" (uid 999), the data directory's owner. ----
FROM postgres:15-bookworm AS agent
COPY --from=build /out/pgquorum /usr/local/bin/pgquorum
USER postgres
ENTRYPOINT ["/usr/local/bin/pgquorum"]
CMD ["agent"]

# ---- run (the default target): no shell, no package manager; uid/gid 65532 ("nonroot", numeric so
#      that Kubernetes can verify runAsNonRoot) ----
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pgquorum /usr/local/bin/pgquorum
USER 65532:65532
# 6432 PostgreSQL protocol, 8008 admin HTTP (/healthz, /readyz, /metrics), 7001 Raft
EXPOSE 6432 8008 7001
ENTRYPOINT ["/usr/local/bin/pgquorum"]
CMD ["run", "--config", "/etc/pgquorum/pgquorum.yaml"]
