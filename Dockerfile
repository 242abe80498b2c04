# syntax=docker/dockerfile:1
#
# chatd's container image: a static binary on Alpine, run as an
# unprivileged user. From the repository root:
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t chatd .
#
# Alpine rather than distroless: the HEALTHCHECK needs a wget and
# Kubernetes' preStop hook a sleep, and busybox gives both in a few MB.
# deploy/dockerfile_test.go checks this file (docs/deploying.md).

# At least the go line of go.mod: the image's Go does not fetch another.
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
# The modules first, so that a change of source reuses their layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static (no cgo, so no libc to match), without the build machine's paths;
# -X stamps what --version prints. /out/data becomes the data dir, owned
# by the user chatd runs as.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/chatd ./cmd/chatd \
 && mkdir -p /out/data

FROM alpine:3.22
COPY --from=build /out/chatd /usr/local/bin/chatd
COPY --from=build --chown=65532:65532 /out/data /var/lib/chatd
# Numeric, so that Kubernetes' runAsNonRoot can check it without a passwd entry.
USER 65532:65532
# chatd's default --http is loopback, which nothing outside the container reaches.
ENV CHATD_HTTP=0.0.0.0:8080 \
    CHATD_DATA_DIR=/var/lib/chatd
VOLUME /var/lib/chatd
# HTTP (clients, /metrics, /healthz, /readyz) and, with --cluster, NATS routes.
EXPOSE 8080 6222
# The port follows CHATD_HTTP. The start period covers a clustered node's
# wait for its peers (up to 2 minutes) and PostgreSQL's (up to 1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=3m --retries=3 \
  CMD wget -q -O /dev/null "http://127.0.0.1:${CHATD_HTTP##*:}/readyz" || exit 1
ENTRYPOINT ["chatd"]
