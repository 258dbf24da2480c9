# syntax=docker/dockerfile:1
#
# tunnelward images. One build stage compiles every binary statically; two
# small runtime targets run them as a non-root user on distroless/static
# (no shell, no package manager, CA certificates and tzdata only):
#
#   docker build --target reconciler -t tunnelward/reconciler .   (the default)
#   docker build --target cloudsim   -t tunnelward/cloudsim .
#
# GO_VERSION follows the go directive in go.mod (a test keeps them equal).
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
# Modules first, so a source change does not re-download them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w -buildid= -X main.version=${VERSION}" -o /out/ \
        ./cmd/reconciler ./cmd/publisher ./cmd/cloudsim \
 && mkdir -p /out/data

# Shared runtime: all three binaries, so `docker compose exec reconciler
# publisher ...` works without a second image.
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /out/reconciler /out/publisher /out/cloudsim /usr/local/bin/
# distroless has no shell to mkdir with; the data directory comes from the
# build stage, owned by the nonroot user, so a fresh named volume inherits it.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data

FROM runtime AS cloudsim
EXPOSE 8787
ENTRYPOINT ["/usr/local/bin/cloudsim"]
CMD ["--listen", "0.0.0.0:8787"]

FROM runtime AS reconciler
ENV TUNNELWARD_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8081 4222
ENTRYPOINT ["/usr/local/bin/reconciler"]
