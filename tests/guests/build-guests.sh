#!/usr/bin/env bash
# Build the small bootable Debian guests the boot tests migrate (tests/support/guests.rs calls
# this; run it by hand to warm the cache). Prints the cache folder on stdout, logs on stderr.
#
# Every guest is Debian bookworm from packages (debootstrap minbase + linux-image-amd64 +
# initramfs-tools + GRUB 2), one raw disk image each:
#
#   bios-generic     MBR, GRUB for i386-pc, generic initramfs (MODULES=most)
#   uefi-generic     GPT + EFI system partition, GRUB for x86_64-efi (removable path), generic
#   bios-hostonly    MBR, GRUB for i386-pc, initramfs built the way a VMware host-only initramfs
#                    is (MODULES=list: vmw_pvscsi, mptspi, sd_mod, scsi_mod, ext4 only); checked
#                    with lsinitramfs: no virtio, no ahci
#
# /sbin/init of every guest is a script that prints `VMIGRATE-GUEST-BOOTED <name> <nonce>` on the
# console (ttyS0) and powers off, so a boot is proven by the root file system being found,
# mounted and run, not by the kernel starting. guests.json lists the images, markers and layout.
#
# Nothing here needs loop devices, device-mapper or a VM: file systems are made straight into the
# image at the partition's offset (mkfs.ext4 -d, mkfs.vfat + mtools), and GRUB is installed the
# way grub-install does it, by hand: grub-mkimage (run inside the guest's tree, so the modules
# are the guest's own) for core.img / BOOTX64.EFI, boot.img into the MBR, core.img into the gap
# after it. Needs root (debootstrap, chroot), debootstrap, e2fsprogs, dosfstools, mtools, fdisk,
# zstd and the apt mirror; scripts/test-all.sh installs them.
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/vmigrate/guests/<hash>/, where <hash> is the SHA-256 of
# this file (the recipe) and the suite; a finished build has a `done` file. Concurrent callers
# wait on a lock; a failed build leaves nothing behind.
set -euo pipefail

suite=bookworm
here=$(cd "$(dirname "$0")" && pwd)
self="$here/$(basename "$0")"
hash=$( (cat "$self"; echo "$suite") | sha256sum | cut -c1-16)
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/vmigrate/guests"
out="$cache_root/$hash"

log() { echo "build-guests: $*" >&2; }

if [ -f "$out/done" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/$hash.lock"
flock 9
if [ -f "$out/done" ]; then
  echo "$out"
  exit 0
fi

[ "$(id -u)" = 0 ] || { log "must run as root (debootstrap, chroot)"; exit 1; }
for tool in debootstrap mkfs.ext4 mkfs.vfat mmd mcopy sfdisk sha256sum zstd flock; do
  command -v "$tool" >/dev/null || { log "missing $tool (scripts/test-all.sh installs it)"; exit 1; }
done

# The Debian mirror this machine's apt uses, else deb.debian.org.
mirror=${VMIGRATE_GUEST_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 !~ /security/ && $2 ~ /debian/ {print $2; exit}')
fi
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list 2>/dev/null | awk '/^deb / && $2 !~ /security/ && $2 ~ /debian/ {print $2; exit}')
fi
mirror=${mirror:-http://deb.debian.org/debian}

work="$cache_root/$hash.tmp.$$"
cleanup() {
  # Never follow into the chroot's mounts: unmount first, then remove.
  for m in proc sys dev; do umount -l "$work/rootfs/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$work"
root="$work/rootfs"
t0=$(date +%s)

# The debootstrapped tree is cached on its own (keyed by suite and package list), so a change
# to the guests' recipe below does not download the packages again.
packages=linux-image-amd64,initramfs-tools,e2fsprogs,grub-pc-bin,grub-efi-amd64-bin,grub2-common
base="$cache_root/base-$(echo "$suite $packages" | sha256sum | cut -c1-16).tar.zst"
if [ -f "$base" ]; then
  log "unpacking the cached debootstrap tree $base"
  mkdir -p "$root"
  tar -C "$root" --zstd -xpf "$base"
else
  log "debootstrap $suite from $mirror (minbase + kernel + initramfs-tools + GRUB)"
  debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
  }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" --zstd -cpf "$base.tmp.$$" . && mv "$base.tmp.$$" "$base"
fi
t1=$(date +%s)
log "guest tree ready in $((t1 - t0)) s"

kver=$(basename "$(ls -d "$root"/lib/modules/* | head -n 1)")
[ -f "$root/boot/vmlinuz-$kver" ] || { log "no kernel in the guest tree"; exit 1; }

# Trim what a guest never reads (apt caches and lists, docs, locales). Kernel modules stay: a
# conversion (virt-v2v) rebuilds the initramfs from them.
rm -rf "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/boot/initrd.img-*
mkdir -p "$root/boot/grub" "$root/boot/efi"
cp -a "$root/usr/lib/grub/i386-pc" "$root/usr/lib/grub/x86_64-efi" "$root/boot/grub/"
echo "vmigrate-guest" >"$root/etc/hostname"

# /sbin/init: the marker, then power off. The name and nonce come from /etc/vmigrate-guest.
rm -f "$root/sbin/init"
cat >"$root/sbin/init" <<'EOF'
#!/bin/sh
# vmigrate test guest init: prove the root file system was found, mounted and run, then power off.
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
read -r name nonce </etc/vmigrate-guest
rootdev=$(awk '$2 == "/" && $1 != "rootfs" {print $1}' /proc/mounts | tail -n 1)
disks=$(ls /sys/block | tr '\n' ' ')
echo "VMIGRATE-GUEST-BOOTED $name $nonce root=$rootdev disks=$disks" >/dev/console
sync
echo o >/proc/sysrq-trigger
sleep 30
EOF
chmod 0755 "$root/sbin/init"

# GRUB's own settings, as update-grub would read them (a conversion may regenerate grub.cfg).
cat >"$root/etc/default/grub" <<'EOF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
EOF

manifest="$work/out/guests.json"
mkdir -p "$work/out"
echo '{"suite": "'$suite'", "kernel": "'"$kver"'", "hash": "'"$hash"'", "guests": [' >"$manifest"
first=1

# build_guest NAME FIRMWARE(bios|efi) INITRAMFS(generic|hostonly)
build_guest() {
  local name=$1 firmware=$2 initramfs=$3
  local img="$work/out/$name.raw" size_mib=2048 esp_mib=64
  local uuid nonce root_off_mib root_part
  local g0 g1
  g0=$(date +%s)
  uuid=$(cat /proc/sys/kernel/random/uuid)
  nonce=$(cat /proc/sys/kernel/random/uuid | cut -c1-8)
  echo "$name $nonce" >"$root/etc/vmigrate-guest"

  # The initramfs, as the guest's own update-initramfs builds it (once per kind).
  if [ "$initramfs" = hostonly ]; then
    sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
    printf '%s\n' vmw_pvscsi mptspi sd_mod scsi_mod ext4 >"$root/etc/initramfs-tools/modules"
  else
    sed -i 's/^MODULES=.*/MODULES=most/' "$root/etc/initramfs-tools/initramfs.conf"
    : >"$root/etc/initramfs-tools/modules"
  fi
  if [ -f "$work/initrd-$initramfs" ]; then
    cp "$work/initrd-$initramfs" "$root/boot/initrd.img-$kver"
  else
    mount -t proc proc "$root/proc"
    chroot "$root" mkinitramfs -o "/boot/initrd.img-$kver" "$kver" >"$work/mkinitramfs-$name.log" 2>&1 || {
      umount "$root/proc"
      tail -n 20 "$work/mkinitramfs-$name.log" >&2
      exit 1
    }
    umount "$root/proc"
    cp "$root/boot/initrd.img-$kver" "$work/initrd-$initramfs"
  fi
  chroot "$root" lsinitramfs "/boot/initrd.img-$kver" >"$work/out/$name.initramfs.txt"
  local virtio ahci pvscsi
  virtio=$(grep -cE '/(virtio_blk|virtio_scsi|virtio_pci)\.ko' "$work/out/$name.initramfs.txt" || true)
  ahci=$(grep -cE '/(ahci|libahci)\.ko' "$work/out/$name.initramfs.txt" || true)
  pvscsi=$(grep -cE '/vmw_pvscsi\.ko' "$work/out/$name.initramfs.txt" || true)
  if [ "$initramfs" = hostonly ]; then
    [ "$virtio" = 0 ] && [ "$ahci" = 0 ] && [ "$pvscsi" = 1 ] || {
      log "$name: host-only initramfs has virtio=$virtio ahci=$ahci vmw_pvscsi=$pvscsi"
      exit 1
    }
  else
    [ "$virtio" -ge 3 ] && [ "$ahci" -ge 1 ] || { log "$name: generic initramfs lacks virtio or ahci"; exit 1; }
  fi

  if [ "$firmware" = efi ]; then
    root_off_mib=$((1 + esp_mib)); root_part=2
    printf 'UUID=%s / ext4 errors=remount-ro 0 1\n/dev/disk/by-partlabel/ESP /boot/efi vfat umask=0077 0 1\n' "$uuid" >"$root/etc/fstab"
  else
    root_off_mib=1; root_part=1
    printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$uuid" >"$root/etc/fstab"
  fi
  cat >"$root/boot/grub/grub.cfg" <<EOF
# Written by vmigrate's test guest builder in update-grub's shape (GRUB_CMDLINE_LINUX from /etc/default/grub).
set default=0
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry 'Debian GNU/Linux' {
	search --no-floppy --fs-uuid --set=root $uuid
	echo 'Loading Linux $kver ...'
	linux /boot/vmlinuz-$kver root=UUID=$uuid ro console=ttyS0,115200
	echo 'Loading initial ramdisk ...'
	initrd /boot/initrd.img-$kver
}
EOF
  # Embedded in the GRUB image: find the root file system by UUID, whatever the disk is called.
  printf 'search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/boot/grub\n' "$uuid" >"$root/tmp/early.cfg"

  truncate -s "${size_mib}M" "$img"
  if [ "$firmware" = efi ]; then
    printf 'label: gpt\nstart=1MiB, size=%dMiB, type=uefi, name=ESP\nstart=%dMiB, type=linux, name=root\n' \
      "$esp_mib" "$root_off_mib" | sfdisk -q "$img"
  else
    printf 'label: dos\nstart=1MiB, type=83, bootable\n' | sfdisk -q "$img"
  fi
  local root_mib=$((size_mib - root_off_mib - 1))
  # GRUB 2.06 reads neither orphan_file nor metadata_csum_seed; keep the file system to what it reads.
  mkfs.ext4 -q -F -L root -U "$uuid" -O ^orphan_file,^metadata_csum_seed -d "$root" \
    -E "offset=$((root_off_mib << 20))" "$img" "${root_mib}M"

  if [ "$firmware" = efi ]; then
    chroot "$root" grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI -c /tmp/early.cfg -p /boot/grub \
      part_gpt part_msdos ext2 fat search search_fs_uuid normal linux configfile echo test serial terminal efi_gop all_video
    local esp="$work/esp.img"
    rm -f "$esp"
    mkfs.vfat -C -n ESP "$esp" $((esp_mib * 1024)) >/dev/null
    mmd -i "$esp" ::/EFI ::/EFI/BOOT
    mcopy -i "$esp" "$root/tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
    dd if="$esp" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
    rm -f "$esp" "$root/tmp/BOOTX64.EFI"
  else
    chroot "$root" grub-mkimage -O i386-pc -o /tmp/core.img -c /tmp/early.cfg -p /boot/grub \
      biosdisk part_msdos ext2 search search_fs_uuid normal linux configfile echo test serial terminal
    local core_bytes
    core_bytes=$(stat -c %s "$root/tmp/core.img")
    [ "$core_bytes" -lt $(((root_off_mib << 20) - 512)) ] || { log "core.img too large"; exit 1; }
    # boot.img's code (not the partition table) into the MBR; core.img right after it, where
    # boot.img (sector 1) and diskboot's default block list (sector 2 on) look for it.
    dd if="$root/usr/lib/grub/i386-pc/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
    dd if="$root/tmp/core.img" of="$img" bs=512 seek=1 conv=notrunc status=none
    rm -f "$root/tmp/core.img"
  fi
  rm -f "$root/tmp/early.cfg"

  g1=$(date +%s)
  log "$name ($firmware, $initramfs initramfs) built in $((g1 - g0)) s"
  [ $first = 1 ] || echo ',' >>"$manifest"
  first=0
  printf '  {"name": "%s", "image": "%s.raw", "firmware": "%s", "initramfs": "%s", "marker": "VMIGRATE-GUEST-BOOTED %s %s", "root_uuid": "%s", "root_partition": %d, "size_bytes": %d}' \
    "$name" "$name" "$firmware" "$initramfs" "$name" "$nonce" "$uuid" "$root_part" $((size_mib << 20)) >>"$manifest"
}

build_guest bios-generic bios generic
build_guest uefi-generic efi generic
build_guest bios-hostonly bios hostonly
printf '\n]}\n' >>"$manifest"

rm -rf "$out"
mv "$work/out" "$out"
date -u +%FT%TZ >"$out/done"
log "built in $(($(date +%s) - t0)) s: $out"
echo "$out"
