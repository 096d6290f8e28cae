# syntax=docker/dockerfile:1
# cyberdesk-operator: a static musl binary on distroless, running as non-root.

FROM rust:1-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
# The musl target of the platform being built (x86_64 or aarch64: both are also Rust's names).
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
# The whole workspace: integration/ is a workspace member, so cargo needs its manifest and
# sources to load the workspace even though only the operator is built.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY integration ./integration
COPY build.rs ./
# The git revision for cyberdesk_build_info (.git is not in the build context):
#   docker build --build-arg REVISION=$(git rev-parse --short=12 HEAD) .
ARG REVISION=unknown
# Cache mounts keep the registry and build output between builds; the binary is copied out
# of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
    && CYBERDESK_REVISION="$REVISION" cargo build --release --locked --target "$target" -p cyberdesk-operator \
    && cp "target/$target/release/cyberdesk-operator" /cyberdesk-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /cyberdesk-operator /cyberdesk-operator
USER 65532:65532
# 8443: admission webhooks (HTTPS); 8081: /metrics /healthz /readyz
EXPOSE 8443 8081
ENTRYPOINT ["/cyberdesk-operator"]
CMD ["run"]
