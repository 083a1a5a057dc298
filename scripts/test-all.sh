#!/usr/bin/env bash
# Install what the tests need (idempotent), then run every check: formatting, clippy, all Rust
# tests (unit, integration against vcsim / qemu-nbd / nbdkit / qemu-img), the C and Python
# suites, the fuzz smoke runs and the benchmark quick mode.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)

need_apt=()
for pair in go:golang-go tmux:tmux chromium:chromium qemu-img:qemu-utils qemu-nbd:qemu-utils nbdkit:nbdkit nbdcopy:libnbd-bin valgrind:valgrind nginx:nginx-light openssl:openssl curl:curl; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
[ -d /usr/share/gocode/src/github.com/vmware/govmomi ] || need_apt+=(golang-github-vmware-govmomi-dev)
# The boot tests (tests/e2e_boot.rs): QEMU and OVMF boot the migrated guests; debootstrap and the
# file-system tools build them (tests/guests/build-guests.sh). bookworm's qemu-system-x86 matches
# its qemu-utils.
for pair in qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap mkfs.ext4:e2fsprogs mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk zstd:zstd; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || need_apt+=(ovmf)
# Guest conversion (docs/conversion.md): Debian's virt-v2v 2.2 (virt-v2v-in-place, with
# libguestfs). supermin builds libguestfs's appliance from the host's kernel, so one must be in
# /boot (a CI container has none): linux-image-amd64.
command -v virt-v2v-in-place >/dev/null 2>&1 || need_apt+=(virt-v2v)
# Inspection before anything moves (tests/e2e_inspect.rs): libguestfs's virt-inspector.
command -v virt-inspector >/dev/null 2>&1 || need_apt+=(guestfs-tools)
# The cluster conversion test's stand-in kubelet (tests/support/kubelet.rs) runs pods in a
# private mount namespace: unshare and mount from util-linux / mount.
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v mount >/dev/null 2>&1 || need_apt+=(mount)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need_apt+=(linux-image-amd64)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The cluster tests' peers (kube-apiserver, kube-controller-manager, etcd) from their Go modules,
# once per version under ${XDG_CACHE_HOME:-$HOME/.cache}/vmigrate/peers (first build: see
# tests/peers/build-kube.sh; cached afterwards).
echo "== peers: Kubernetes control plane"
bash tests/peers/build-kube.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc (broken or private links are errors)"
# The C ABI crate shares the facade's library name (libvmigrate); its documentation is the header.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked -p vmigrate -p vmigrate-core -p vmigrate-vsphere -p vmigrate-kubevirt -p vmigrate-ova -p vmigrate-testkit
# The bootable Debian guests of the boot tests: built once (debootstrap, a few minutes), then
# cached under ${XDG_CACHE_HOME:-$HOME/.cache}/vmigrate/guests by a hash of their recipe.
echo "== test guests"
bash tests/guests/build-guests.sh
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast

# Python bindings: build the abi3 wheel with maturin, install it into a venv under target/, check
# the stubs against the module (mypy.stubtest) and run the pytest suite. The C programs (gcc,
# both libraries, valgrind) already ran above as vmigrate-ffi's integration tests.
echo "== python: wheel, stubtest, pytest"
venv="$here/target/python-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
for mod in maturin pytest mypy; do
  "$venv/bin/python" -c "import $mod" 2>/dev/null || "$venv/bin/python" -m pip install -q "$mod"
done
wheels="$here/target/wheels"
rm -rf "$wheels"
"$venv/bin/maturin" build --locked -m python/Cargo.toml -o "$wheels"
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheels"/vmigrate-*.whl
(cd "$here/target" && "$venv/bin/python" -m mypy.stubtest vmigrate._native)
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests | tee "$here/target/pytest.log"
pytest_rc=${PIPESTATUS[0]}
set -e
echo "pytest summary: $(tail -n 1 "$here/target/pytest.log")"
if [ "$pytest_rc" -eq 5 ]; then
  echo "pytest collected no tests: the Python suite is missing" >&2
  exit 1
fi
[ "$pytest_rc" -eq 0 ] || exit "$pytest_rc"

# The vSphere benchmarks in quick mode (dev profile, small inventory and disk): run so they
# cannot rot; their numbers are not judged here (docs/benchmarks.md has the real ones).
echo "== benches: vSphere (--quick)"
cargo run -q --locked -p vmigrate-benches --bin inventory_bench -- --quick
cargo run -q --locked -p vmigrate-benches --bin datastore_read_bench -- --quick
# The copy engine bench (docs/benchmarks.md, "Copy engine"): small images, every scenario must
# produce our row (file, NBD, NBD->NBD, VMDK, HTTP) against the anchors.
echo "== benches: copy engine (--quick)"
cargo run -q --locked -p vmigrate-benches --bin copy_bench -- --quick --dir "$here/target/bench-copy-quick"
# The plan bench (docs/benchmarks.md, "Plans"): 20 VMs through the executor against the bare engine.
echo "== benches: plans (--quick)"
cargo run -q --locked -p vmigrate-benches --bin plan_bench -- --quick --dir "$here/target/bench-plan-quick"
# The conversion bench (docs/benchmarks.md, "Guest conversion"): the host-only guest migrated
# with conversion against `virt-v2v -i vmx`, once each, no boots (a few minutes under TCG).
echo "== benches: guest conversion (--quick)"
cargo run -q --locked -p vmigrate-benches --bin convert_bench -- --quick --dir "$here/target/bench-convert-quick"
