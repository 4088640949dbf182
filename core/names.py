"""Names shared across layers: tag keys, resource prefixes, users and addresses that the renderer,
the adapters, the checks and the sweep must spell the same way. Defined here once."""
from __future__ import annotations

# Tag/label keys every created resource carries (GCE label rules: lowercase, digits, - and _).
TAG_BAKE_ID = "clara-bake-id"
TAG_EXPIRES = "clara-expires"          # UTC YYYYMMDDhhmm: `sweep` deletes what is past it
TAG_ROLE = "clara-role"                # build | test | image
TAG_FINGERPRINT = "clara-fingerprint"  # first 32 hex of the fingerprint
TAG_VALIDATED = "clara-validated"      # "true" once the checks passed
TAG_CHANNEL_PREFIX = "clara-channel-"  # clara-channel-candidate = "true"
TAG_BUILD_TIME = "clara-build-time"    # provenance, set by Packer on the image

# What a bake creates is named with these prefixes, so `sweep` finds what a killed bake left.
BUILD_PREFIX = "clara-build-"          # Packer's build VM: GCE network tag and firewall, Azure's resource group
TEST_PREFIX = "clara-test-"            # test VMs, their firewalls and work folders
# `invoke launch`: a team member's VM, never swept (no bake ID, no expiry, role "launched"). Its
# firewall, security group and network resources carry the prefix; everything it creates, TAG_LAUNCH.
LAUNCH_PREFIX = "clara-launch-"
TAG_LAUNCH = "clara-launch"            # the launched VM's name
ROLE_LAUNCHED = "launched"             # TAG_ROLE of what `invoke launch` creates

# The checks log in to a test VM as this user on every cloud. It differs from every build user
# (Packer's `packer`, the distribution's `ubuntu`), so the hygiene check can prove the build
# user is gone: a test VM created with the build user's name would bring that user back (Azure's
# admin_username, GCE's ssh-keys metadata and cloud-init all create the user they are given).
TEST_USER = "clara-check"

# The host as QEMU's user network shows it to the guest (the local registry is reached there).
GUEST_HOST = "10.0.2.2"

# The Packer variable through which the bake gives a cloud builder the runner's own /32.
RUNNER_CIDR = "ssh_source_cidr"
