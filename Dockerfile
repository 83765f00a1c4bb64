# syntax=docker/dockerfile:1
#
# Azaion Loader container image (see docs/deployment.md).
#
#   docker buildx build --platform linux/arm64,linux/amd64 \
#     --build-arg VERSION=$(git describe --tags --always) --build-arg COMMIT=$(git rev-parse --short HEAD) \
#     -t REGISTRY/azaion/loader:TAG --push .
#
# The build stage always runs on the builder's own platform and cross-compiles a static binary
# (CGO_ENABLED=0), and the final stage has no RUN step, so an arm64 image builds on an amd64
# machine without QEMU.

ARG GO_VERSION=1.26

# ---- build -------------------------------------------------------------------------------------
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src

# Dependencies first: this layer is reused while go.mod/go.sum do not change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .

ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/azaion-loader ./cmd/azaion-loader

# The writable directories of the final image. Its base has no shell to create them, so they
# are made here and copied with their owner set (a named volume mounted there starts as a copy
# of them, owner included).
RUN mkdir -p /out/state/models /out/logs

# ---- final -------------------------------------------------------------------------------------
# distroless/static: CA certificates (the loader calls https://api.azaion.com and an https CDN),
# tzdata, /etc/passwd with user "nonroot" (65532); no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot

ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="azaion-loader" \
      org.opencontainers.image.description="Azaion Loader: encrypted model resources and Docker image unlock for edge devices" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"

COPY --from=build /out/azaion-loader /azaion-loader
COPY --from=build --chown=65532:65532 /out/state /var/lib/azaion
COPY --from=build --chown=65532:65532 /out/logs /var/log/azaion

# SPEC §7 settings; the ones not set here keep the binary's defaults
# (RESOURCE_API_URL=https://api.azaion.com, API_VERSION=latest, LOG_LEVEL=info,
# DOCKER_HOST=unix:///var/run/docker.sock, ...).
ENV MODEL_CACHE_DIR=/var/lib/azaion/models \
    LOG_DIR=/var/log/azaion \
    IMAGES_PATH=/opt/azaion/images.enc \
    LISTEN_ADDR=:8080

# Non-root. Unlock talks to the host's Docker daemon through the mounted socket
# (/var/run/docker.sock, normally root:docker 0660): run the container with the socket's group
# as a supplementary group (docker run --group-add "$(stat -c %g /var/run/docker.sock)",
# compose: group_add). Nothing else needs privileges.
USER 65532:65532

EXPOSE 8080

# The image has no shell or curl: the binary asks its own GET /health (port from LISTEN_ADDR).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
	CMD ["/azaion-loader", "healthcheck"]

ENTRYPOINT ["/azaion-loader"]
CMD ["serve"]
