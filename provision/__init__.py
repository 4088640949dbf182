"""Stage 4: provisioning that runs inside the VM, on the guest's python3 (3.8+), standard library only.

`python3 -m provision --config provision.json [--only STEP,...] [--dry-run] [--root DIR] [--summary FILE]`
Each step in provision/steps/ is idempotent and reports changed / unchanged / skipped (reason).
"""
