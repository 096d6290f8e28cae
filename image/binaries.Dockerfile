# syntax=docker/dockerfile:1
# The release's static binaries, built from source for the platform being built (buildx
# runs arm64 under QEMU, so no cross toolchain has to be kept in step):
#   docker buildx build -f image/binaries.Dockerfile --platform linux/amd64,linux/arm64 \
#     --build-arg REVISION=$(git rev-parse HEAD) --output type=local,dest=dist/bin .
# leaves dist/bin/linux_<arch>/cyberdesk-operator, which `image/build.sh context` stages for
# the image's one final stage, image/Containerfile.

FROM rust:1-bookworm AS builder
# musl-gcc: ring compiles C (and assembly) for the musl target.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
# The musl target of the platform being built (x86_64 or aarch64: both are also Rust's names).
RUN rustup target add "$(uname -m)-unknown-linux-musl"
# The dependency list goes into the binary (section .dep-v0), where Trivy, Grype and Syft
# read it: the image carries its own bill of materials.
RUN cargo install cargo-auditable@0.7.7 --locked
WORKDIR /src
# Everything the operator's build reads, each path where it is in the repository:
# integration/ is a workspace member (cargo loads the workspace), the binary embeds the
# default VM template and the shipped policies. integration/tests/image.rs builds the
# operator from a copy of exactly these paths, so a missing one fails `make test`.
COPY Cargo.toml ./Cargo.toml
COPY Cargo.lock ./Cargo.lock
COPY build.rs ./build.rs
COPY src ./src
COPY integration ./integration
COPY policies ./policies
COPY manifests/base/vm-template ./manifests/base/vm-template
# The git revision for cyberdesk_build_info (.git is not in the build context).
ARG REVISION=unknown
# Cache mounts keep the registry and build output between builds; the binary is copied out
# of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
    && CYBERDESK_REVISION="$REVISION" cargo auditable build --release --locked --target "$target" -p cyberdesk-operator \
    && cp "target/$target/release/cyberdesk-operator" /cyberdesk-operator

# Only the binary, for `--output type=local`.
FROM scratch
COPY --from=builder /cyberdesk-operator /cyberdesk-operator
