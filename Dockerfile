# syntax=docker/dockerfile:1.7
# One image per Provenant service, plus the CUDA training worker. Build one target at a time:
#
#   docker build --target ingest -t registry.example.com/provenant/provenant-ingest:0.1.0 .
#   (targets: ingest, validate, train, infer, settle, train-worker-cuda)
#   docker build --target train-worker-cuda -t registry.example.com/provenant/provenant-train:0.1.0-cuda .
#
# The service images are release binaries (glibc, everything else linked in; TLS is rustls, SQLite
# is compiled in) on distroless/cc, running as the distroless "nonroot" user (65532), the same
# user the Helm chart sets. BuildKit cache mounts keep the cargo registry and target directory
# between builds, so the second service builds mostly from cache.

# RUST_VERSION matches rust-toolchain.toml. DEBIAN_RELEASE must match the runtime image's Debian
# (distroless cc-debian12 is bookworm): the binaries link the system glibc dynamically.
ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm
# The CUDA worker: a CUDA toolkit (nvcc, NVRTC headers) to build, the CUDA runtime libraries to
# run. Match CUDA_VERSION to the driver on your GPU nodes.
ARG CUDA_VERSION=12.9.1
ARG CUDA_UBUNTU=ubuntu24.04

# ---------------------------------------------------------------------------------------------
# Build stages
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS rust-base
WORKDIR /src
COPY . .
RUN mkdir -p /out/data

FROM rust-base AS build-ingest
RUN --mount=type=cache,id=provenant-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=provenant-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p provenant-ingest \
    && install -m 0755 target/release/provenant-ingest /out/

FROM rust-base AS build-validate
RUN --mount=type=cache,id=provenant-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=provenant-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p provenant-validate \
    && install -m 0755 target/release/provenant-validate /out/

FROM rust-base AS build-train
RUN --mount=type=cache,id=provenant-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=provenant-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p provenant-train \
    && install -m 0755 target/release/provenant-train /out/

FROM rust-base AS build-infer
RUN --mount=type=cache,id=provenant-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=provenant-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p provenant-infer \
    && install -m 0755 target/release/provenant-infer /out/

FROM rust-base AS build-settle
RUN --mount=type=cache,id=provenant-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=provenant-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p provenant-settle \
    && install -m 0755 target/release/provenant-settle /out/

# The CUDA build needs the CUDA toolkit, so it builds on NVIDIA's devel image with the Rust
# toolchain copied in from the official Rust image (same glibc family, no curl | sh).
# Burn's CUDA backend (cubecl-cuda) builds against an LLVM bundle that its build script
# (tracel-llvm-bundler) downloads from github.com/tracel-ai/tracel-llvm releases into
# ~/.local/share/tracel: this stage needs to reach GitHub, or a pre-filled cache there.
# provenant-train's `cuda` feature switches the workers' Burn backend from `flex` (CPU) to CUDA;
# `provenant-train --worker` (the CMD below) runs workers only, pulling jobs from the work queue.
FROM nvidia/cuda:${CUDA_VERSION}-devel-${CUDA_UBUNTU} AS build-train-cuda
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/cuda/bin:${PATH}
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=rust-base /usr/local/rustup /usr/local/rustup
COPY --from=rust-base /usr/local/cargo /usr/local/cargo
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=provenant-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=provenant-target-cuda,target=/src/target,sharing=locked \
    cargo build --release --locked -p provenant-train --features cuda \
    && install -D -m 0755 target/release/provenant-train /out/provenant-train

# ---------------------------------------------------------------------------------------------
# Runtime images
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
WORKDIR /app
# A container listens on every interface (the services' own default is loopback). The Helm chart
# sets the same in its rendered configuration.
ENV PROVENANT_HTTP__HOST=0.0.0.0
# glibc keeps tensors up to 32 MiB in its heap instead of mapping and unmapping them on every
# training step and prefill (model::backend::GLIBC_TUNABLES; harmless for the other services).
ENV GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456
# SQLite files and other local data go to /app/data (an emptyDir or volume in Kubernetes).
COPY --from=rust-base --chown=65532:65532 /out/data /app/data
USER 65532:65532
# Kubernetes probes /health/live and /health/ready; distroless has no shell or curl to run a
# Docker HEALTHCHECK with.

FROM runtime AS ingest
COPY --from=build-ingest /out/provenant-ingest /usr/local/bin/provenant-ingest
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/provenant-ingest"]

FROM runtime AS validate
COPY --from=build-validate /out/provenant-validate /usr/local/bin/provenant-validate
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/provenant-validate"]

FROM runtime AS train
COPY --from=build-train /out/provenant-train /usr/local/bin/provenant-train
EXPOSE 8083
ENTRYPOINT ["/usr/local/bin/provenant-train"]

FROM runtime AS infer
COPY --from=build-infer /out/provenant-infer /usr/local/bin/provenant-infer
EXPOSE 8084
ENTRYPOINT ["/usr/local/bin/provenant-infer"]

FROM runtime AS settle
COPY --from=build-settle /out/provenant-settle /usr/local/bin/provenant-settle
EXPOSE 8085
ENTRYPOINT ["/usr/local/bin/provenant-settle"]

# The GPU training worker: CUDA runtime libraries (cudart, NVRTC, cuBLAS) from NVIDIA's runtime
# image; the driver comes from the node through the NVIDIA container toolkit.
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${CUDA_UBUNTU} AS train-worker-cuda
RUN groupadd --system --gid 65532 provenant \
    && useradd --system --uid 65532 --gid 65532 --home-dir /app --shell /usr/sbin/nologin provenant \
    && install -d -o 65532 -g 65532 /app /app/data
WORKDIR /app
ENV PROVENANT_HTTP__HOST=0.0.0.0 \
    CUDA_CACHE_PATH=/tmp/cuda-cache \
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456
COPY --from=build-train-cuda /out/provenant-train /usr/local/bin/provenant-train
USER 65532:65532
EXPOSE 8083
ENTRYPOINT ["/usr/local/bin/provenant-train"]
CMD ["--worker"]

# The default target: the ingest service (build others with --target).
FROM ingest
