#!/usr/bin/env bash
# Install what the tests need (idempotent), then run every check: formatting, clippy, all Rust
# tests (unit, integration against vcsim / qemu-nbd / nbdkit / qemu-img), the C and Python
# suites, the fuzz smoke runs and the benchmark quick mode.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)

need_apt=()
for pair in go:golang-go qemu-img:qemu-utils qemu-nbd:qemu-utils nbdkit:nbdkit nbdcopy:libnbd-bin valgrind:valgrind nginx:nginx-light openssl:openssl; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
[ -d /usr/share/gocode/src/github.com/vmware/govmomi ] || need_apt+=(golang-github-vmware-govmomi-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
