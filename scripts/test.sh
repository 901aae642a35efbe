#!/usr/bin/env bash
# The whole nimbus test suite, from a fresh clone on a fresh machine:
# installs what the tests need (idempotently), checks format, lints and docs,
# runs the Rust unit and integration tests (aws-sdk-rust against the real
# binary), then the end-to-end tests (boto3 and the AWS CLI against the real
# binary). `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "test dependencies"
scripts/setup-test-deps.sh

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "build (nimbus and the lambda_runtime test fixture)"
cargo build --workspace --locked

step "Rust tests"
# Jail, cgroup and containment tests need root (CI runs as root).
if [ "$(id -u)" = 0 ]; then export NIMBUS_PRIVILEGED_TESTS="${NIMBUS_PRIVILEGED_TESTS:-1}"; fi
cargo test --workspace --locked

step "end-to-end tests (boto3, AWS CLI)"
NIMBUS_BIN="$PWD/target/debug/nimbus" python3 -m pytest tests/e2e -q
