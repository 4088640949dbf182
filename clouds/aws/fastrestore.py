"""Fast Snapshot Restore (FSR): the published AMI's snapshots fully initialized in chosen zones.

A volume created from a snapshot loads its blocks lazily from S3 on first read; with FSR enabled
for the snapshot in the volume's Availability Zone it "is fully initialized at creation"
(EbsBlockDevice.VolumeInitializationRate, EC2 API Reference). FSR is billed for every minute it is
enabled per snapshot and zone, with a minimum of one hour, and takes 60 minutes per TiB to
optimize (Amazon EBS User Guide, "Configure fast snapshot restore", "Check the fast snapshot
restore state"): so publish turns it on only in `fast_snapshot_restore_zones` and marks the AMI
`clara-fsr-zones=<zones>`; prune and revoke turn it off again in the zones the mark names, whatever
the manifest says today (an AMI without the mark costs no FSR call: moto has none either).
"""
from __future__ import annotations

from core.errors import CloudError

from .sdk import snapshots, tags_of

TAG_FSR = "clara-fsr-zones"          # on an AMI: the zones publish enabled FSR in, space-separated
# DescribeFastSnapshotRestores states (EC2 API Reference, DescribeFastSnapshotRestoreSuccessItem):
# enabling | optimizing | enabled | disabling | disabled. These three are billed / on their way.
ON = ("enabling", "optimizing", "enabled")


class FastRestore:
    """Enable on publish, disable on prune and revoke (a mixin of clouds.aws.Adapter)."""

    def _fsr_state(self, region: str, snaps: list[str]) -> dict[tuple[str, str], str]:
        """{(snapshot, zone): state} for the snapshots where FSR is not disabled."""
        found: dict[tuple[str, str], str] = {}
        if not snaps:
            return found
        params = {"Filters": [{"Name": "snapshot-id", "Values": snaps}]}
        while True:
            page = self._ec2("describe_fast_snapshot_restores", "read fast snapshot restore state", region,
                             **params)
            for item in page.get("FastSnapshotRestores", []):
                found[(item["SnapshotId"], item["AvailabilityZone"])] = item.get("State", "")
            if not page.get("NextToken"):
                return found
            params["NextToken"] = page["NextToken"]

    def _enable_fast_restore(self, amis: dict[str, str], undo: list) -> None:
        """For each region's AMI, FSR on its snapshots in that region's chosen zones; `undo`
        turns off again only what this call turned on."""
        for region, ami in amis.items():
            zones = self.a.fast_restore_zones(region)
            if not zones:
                continue
            snaps = snapshots(self._image(ami, region) or {})
            if not snaps:
                raise CloudError(f"aws: {ami} in {region} has no EBS snapshot to enable fast snapshot restore on")
            state = self._fsr_state(region, snaps)
            todo = [(s, z) for s in snaps for z in zones if state.get((s, z)) not in ON]
            if not todo:
                continue
            marked = (tags_of(self._image(ami, region) or {}).get(TAG_FSR) or "").split()
            self._fsr_call("enable", region, sorted({s for s, _ in todo}), sorted({z for _, z in todo}))
            undo.append(lambda r=region, t=todo: self._fsr_call("disable", r, sorted({s for s, _ in t}),
                                                                 sorted({z for _, z in t})))
            self._create_tags(region, [ami], {TAG_FSR: " ".join(sorted(set(marked) | set(zones)))}, ami)
            undo.append(lambda r=region, a=ami, m=marked: self._create_tags(r, [a], {TAG_FSR: " ".join(m)}, a)
                        if m else self._ec2("delete_tags", "restore tags", r, Resources=[a], Tags=[{"Key": TAG_FSR}]))
            self.log(f"aws: fast snapshot restore enabling for {', '.join(snaps)} in {', '.join(zones)} "
                     f"(billed per snapshot and zone hour until prune or revoke; ~60 min per TiB to optimize)")

    def _disable_fast_restore(self, region: str, ami: dict) -> list[str]:
        """FSR off in the zones the AMI's mark names, then the mark off; the zones it was on in."""
        marked = set((tags_of(ami).get(TAG_FSR) or "").split())
        if not marked:
            return []
        snaps = snapshots(ami)
        on = [(s, z) for (s, z), st in self._fsr_state(region, snaps).items() if st in ON and z in marked]
        if on:
            self._fsr_call("disable", region, sorted({s for s, _ in on}), sorted({z for _, z in on}))
            self.log(f"aws: fast snapshot restore disabled for {ami['ImageId']}'s snapshots in "
                     f"{', '.join(sorted({z for _, z in on}))}")
        self._ec2("delete_tags", f"unmark {ami['ImageId']}", region, Resources=[ami["ImageId"]],
                  Tags=[{"Key": TAG_FSR}])
        return sorted({z for _, z in on})

    def _fsr_call(self, verb: str, region: str, snaps: list[str], zones: list[str]) -> None:
        """EnableFastSnapshotRestores / DisableFastSnapshotRestores take every snapshot x zone
        pair at once and answer 200 with per-pair failures in `Unsuccessful` (EC2 API Reference):
        any failure is an error here, naming the pair and EC2's code."""
        resp = self._ec2(f"{verb}_fast_snapshot_restores", f"{verb} fast snapshot restore", region,
                         SourceSnapshotIds=snaps, AvailabilityZones=zones)
        failed = [f"{u.get('SnapshotId', '?')} in {e.get('AvailabilityZone', '?')}: {e.get('Error', {}).get('Code', '?')}"
                  f" ({e.get('Error', {}).get('Message', '')})"
                  for u in resp.get("Unsuccessful", []) for e in u.get("FastSnapshotRestoreStateErrors", [])]
        if failed:
            raise CloudError(f"aws: {verb} fast snapshot restore in {region} failed for " + "; ".join(failed))
