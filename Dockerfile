# tagger: one static binary in an empty image.
#
# Normal build (needs a registry for the builder image):
#   docker build -t tagger .
# Without a registry (what CI does, see tests/deploy/container.sh): build the static binary on
# the host and hand its folder in as the `build` stage, so nothing is pulled:
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu
#   mkdir -p /tmp/tagger-build && cp target/x86_64-unknown-linux-gnu/release/tagger /tmp/tagger-build/
#   strip /tmp/tagger-build/tagger
#   podman build --build-context build=/tmp/tagger-build -t tagger .

# ---- builder: pinned official Rust image, fully static glibc binary ----
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake nasm make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/tagger /tagger \
 && strip /tagger

# ---- final: nothing but the binary (models are embedded in it) ----
FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tagger" \
      org.opencontainers.image.description="Automatic ImageNet tags for photos and hand-drawn digit reading, models embedded" \
      org.opencontainers.image.source="https://example.invalid/tagger" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /tagger /tagger
# An unprivileged UID with no entry in /etc/passwd (there is no /etc in scratch).
USER 65532:65532
EXPOSE 8080
# scratch has no shell and no curl: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/tagger", "healthcheck", "--addr", "127.0.0.1:8080"]
ENTRYPOINT ["/tagger"]
CMD ["serve", "--addr", "0.0.0.0:8080"]
