# Fake USB sticks from image files (run as root); adapted from the project's test environment notes.
#   source usb.sh; usb_install; usb_make IMG SIZE {ext4|vfat|exfat}; usb_plug IMG MNT TYPE; usb_unplug MNT
# Kernels without vfat/exfat drivers (containers, minimal VMs) fall back to the FUSE drivers
# (fusefat, exfat-fuse); tests/conformance.rs does the same for its real-FAT run.
usb_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends dosfstools exfatprogs exfat-fuse fusefat fuse3 e2fsprogs >/dev/null
}
usb_make() {  # IMG SIZE TYPE
  rm -f "$1"; truncate -s "$2" "$1"
  case $3 in
    ext4)  mkfs.ext4 -q -F -L BRIEFCASE "$1" ;;
    vfat)  mkfs.vfat -F 32 "$1" >/dev/null ;;   # no label: fusefat would show it as a file
    exfat) mkfs.exfat -L BRIEFCASE "$1" >/dev/null ;;
  esac
}
_has_fs() { grep -qw "$1" /proc/filesystems || modprobe "$1" 2>/dev/null; }
usb_plug() {  # IMG MNT TYPE  -> mounted; echoes how
  mkdir -p "$2"
  case $3 in
    ext4) mount -o loop "$1" "$2" && echo kernel-ext4 ;;
    vfat)  if _has_fs vfat;  then mount -o loop,uid=0,gid=0,umask=022 "$1" "$2" && echo kernel-vfat
           else fusefat -o rw+ "$1" "$2" >/dev/null 2>&1 && echo fuse-fusefat; fi ;;
    exfat) if _has_fs exfat; then mount -o loop "$1" "$2" && echo kernel-exfat
           else local l; l=$(losetup -f --show "$1") && mount.exfat-fuse "$l" "$2" >/dev/null 2>&1 && echo fuse-exfat; fi ;;
  esac
  for _ in $(seq 50); do mountpoint -q "$2" && return 0; sleep 0.05; done; return 1
}
usb_unplug() {  # MNT  (clean eject)
  local src; src=$(findmnt -n -o SOURCE --target "$1"); sync -f "$1"; umount "$1"
  case $src in /dev/loop*) losetup -d "$src" 2>/dev/null || true ;; esac
}
