#!/usr/bin/env bash
# Installs everything the pipeline and its tests need on a fresh Debian 12 machine (run as root,
# or with sudo available). Safe to run again: apt-get and pip skip what is already there.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  packer                      # 1.6.6 on Debian 12: builds amazon-ebs, googlecompute, azure-arm, qemu
  qemu-system-x86 qemu-utils  # the local target's VMs and images
  mmdebstrap e2fsprogs fdisk grub-pc-bin   # the local base image, without loop devices or mounts
  openssh-client openssh-server            # SSH to test VMs; a local sshd for offline tests
  docker-registry skopeo busybox-static    # the stand-in Clara image and its registry on 127.0.0.1
  ca-certificates
)

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[dev]'
# pyenv (as on these machines) makes the `invoke` command visible only after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
echo "setup: done ($("$PYTHON" --version), $(packer version | head -1))"
