#!/usr/bin/env bash
# Installs everything the pipeline and its tests need on a fresh Debian 12 machine (run as root,
# or with sudo available). Safe to run again: apt-get and pip skip what is already there.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  packer                      # 1.6.6 on Debian 12: builds amazon-ebs, googlecompute, azure-arm, qemu
  qemu-system-x86 qemu-utils  # the local target's VMs and images
  nbdkit                      # the lazy-disk model's per-block fetch latency (clouds/local/lazydisk.py)
  mmdebstrap e2fsprogs fdisk grub-pc-bin   # the local base image, without loop devices or mounts
  openssh-client openssh-server            # SSH to test VMs; a local sshd for offline tests
  docker-registry skopeo busybox-static    # the stand-in Clara image and its registry on 127.0.0.1
  ca-certificates
  shellcheck                  # actionlint lints the workflow's run: scripts with it (skipped silently without)
)

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# A current Packer from HashiCorp's signed apt repository when it is reachable: HashiCorp's documented
# install path (https://developer.hashicorp.com/packer/install, "Linux" > Ubuntu/Debian), with the
# key's fingerprint checked before apt trusts it. Azure needs Packer >= 1.14.1 (packer/sources/azure.py);
# Debian 12's own 1.6.6 builds aws, gcp and local with its built-in builders.
HASHICORP_URL=https://apt.releases.hashicorp.com
HASHICORP_FINGERPRINT=798AEC654E5C15428C8E42EEAA16FCBCA621E701
HASHICORP_KEYRING=/usr/share/keyrings/hashicorp-archive-keyring.gpg
hashicorp_repo() {
  [[ -f /etc/apt/sources.list.d/hashicorp.list ]] && return 0
  # CLARA_SETUP_HASHICORP=0 skips the probe (CI: no host but the package registries is contacted).
  [[ ${CLARA_SETUP_HASHICORP:-1} == 0 ]] && { echo "setup: CLARA_SETUP_HASHICORP=0: not asking HashiCorp's repository"; return 1; }
  command -v curl >/dev/null && command -v gpg >/dev/null || { echo "setup: no curl or gpg: skipping HashiCorp's repository"; return 1; }
  # Quick: an offline machine (CI) must not wait, and must not fail.
  curl -fsS --max-time 5 -o /dev/null "$HASHICORP_URL/gpg" 2>/dev/null || return 1
  local tmp; tmp=$(mktemp -d)
  curl -fsS --max-time 20 "$HASHICORP_URL/gpg" -o "$tmp/key.asc" || { rm -rf "$tmp"; return 1; }
  gpg --batch --quiet --dearmor -o "$tmp/keyring.gpg" "$tmp/key.asc"
  if ! gpg --batch --no-default-keyring --keyring "$tmp/keyring.gpg" --with-colons --fingerprint 2>/dev/null \
       | grep -q "^fpr:::::::::$HASHICORP_FINGERPRINT:"; then
    echo "setup: HashiCorp's key does not have fingerprint $HASHICORP_FINGERPRINT: not trusting it" >&2
    rm -rf "$tmp"; return 1
  fi
  as_root install -m 0644 "$tmp/keyring.gpg" "$HASHICORP_KEYRING"
  rm -rf "$tmp"
  echo "deb [arch=$(dpkg --print-architecture) signed-by=$HASHICORP_KEYRING] $HASHICORP_URL $(. /etc/os-release && echo "$VERSION_CODENAME") main" \
    | as_root tee /etc/apt/sources.list.d/hashicorp.list >/dev/null
}
if hashicorp_repo; then
  echo "setup: Packer from HashiCorp's apt repository ($HASHICORP_URL)"
  as_root apt-get update -q || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q packer || echo "setup: could not install HashiCorp's Packer; keeping what is there" >&2
else
  echo "setup: no Packer from $HASHICORP_URL: Debian's Packer 1.6.6 builds aws, gcp and local;" \
       "azure needs Packer >= 1.14.1 (run ./setup.sh again where it is reachable). \`invoke doctor\` says which Packer each target uses."
fi

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
