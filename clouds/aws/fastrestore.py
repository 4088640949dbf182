"""Fast Snapshot Restore (FSR): the published AMI's snapshots fully initialized in chosen zones.

A volume created from a snapshot loads its blocks lazily from S3 on first read; with FSR enabled
for the snapshot in the volume's Availability Zone it "is fully initialized at creation"
(EbsBlockDevice.VolumeInitializationRate, EC2 API Reference). FSR is billed for every minute it is
enabled per snapshot and zone, with a minimum of one hour, and takes 60 minutes per TiB to
optimize (Amazon EBS User Guide, "Configure fast snapshot restore", "Check the fast snapshot
restore state"): so publish turns it on only in `fast_snapshot_restore_zones` and marks the AMI
`clara-fsr-zones=<zones>`; prune and revoke turn it off again in the zones the mark names, whatever
the manifest says today (an AMI without the mark costs no FSR call: moto has none either), and so
does a publish or promote that moves a channel away from an AMI no other channel points at.

FSR is an optimisation: an FSR call that fails (the quota of 5 FSR snapshots per region, a zone
without FSR, a missing permission) is a warning in the log, never the reason a publish fails or
is rolled back.
"""
from __future__ import annotations

from core.errors import CloudError

from .sdk import snapshots, tags_of

TAG_FSR = "clara-fsr-zones"          # on an AMI: the zones publish enabled FSR in, space-separated
# DescribeFastSnapshotRestores states (EC2 API Reference, DescribeFastSnapshotRestoreSuccessItem):
# enabling | optimizing | enabled | disabling | disabled. These three are billed / on their way.
ON = ("enabling", "optimizing", "enabled")
# "You can enable up to 5 snapshots for fast snapshot restore per Region. The quota applies to
# snapshots that you own and snapshots that are shared with you" (Amazon EBS User Guide, "Amazon EBS
# fast snapshot restore", Considerations); the EBS quotas page lists it as adjustable in Service
# Quotas without a quota code, so the doctor compares with this documented default.
DEFAULT_QUOTA = 5


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
        turns off again only what this call turned on. A region whose FSR fails is a warning."""
        for region, ami in amis.items():
            try:
                self._enable_fast_restore_in(region, ami, undo)
            except CloudError as exc:
                self.log(f"aws: warning: fast snapshot restore for {ami} in {region} not enabled: {exc} (the "
                         "image is published without it; `invoke doctor --cloud aws` shows FSR use and quota)")

    def _enable_fast_restore_in(self, region: str, ami: str, undo: list) -> None:
        zones = self.a.fast_restore_zones(region)
        if not zones:
            return
        image = self._image(ami, region) or {}
        snaps = snapshots(image)
        if not snaps:
            raise CloudError(f"aws: {ami} in {region} has no EBS snapshot to enable fast snapshot restore on")
        state = self._fsr_state(region, snaps)
        todo = [(s, z) for s in snaps for z in zones if state.get((s, z)) not in ON]
        if not todo:
            return
        # The mark first: an enable that partly succeeds before failing still leaves FSR that the
        # mark lets prune, revoke and a channel move find and turn off.
        marked = (tags_of(image).get(TAG_FSR) or "").split()
        self._create_tags(region, [ami], {TAG_FSR: " ".join(sorted(set(marked) | set(zones)))}, ami)
        undo.append(lambda r=region, a=ami, m=marked: self._create_tags(r, [a], {TAG_FSR: " ".join(m)}, a)
                    if m else self._ec2("delete_tags", "restore tags", r, Resources=[a], Tags=[{"Key": TAG_FSR}]))
        undo.append(lambda r=region, t=todo: self._disable_pairs(r, t))
        self._fsr_call("enable", region, sorted({s for s, _ in todo}), sorted({z for _, z in todo}))
        self.log(f"aws: fast snapshot restore enabling for {', '.join(snaps)} in {', '.join(zones)} "
                 f"(billed per snapshot and zone hour while a channel points at it; ~60 min per TiB to optimize)")

    def fast_restore_findings(self, found) -> None:
        """The doctor's lines: per region with `fast_snapshot_restore_zones`, the snapshots with FSR
        (DescribeFastSnapshotRestores, every owner's) against the quota. Never a stop: FSR's failure
        at publish is a warning."""
        for region in self._regions():
            zones = self.a.fast_restore_zones(region)
            if not zones:
                continue
            check = f"fast snapshot restore snapshots in {region}"
            try:
                used = self._fsr_snapshots_on(region)
            except CloudError as exc:
                found.add("quota", check, "unknown", f"cannot read the FSR state: {exc}",
                          "allow ec2:DescribeFastSnapshotRestores to see how many of the quota are used")
                continue
            text = (f"{len(used)} of {DEFAULT_QUOTA} snapshots with FSR (the documented default quota per "
                    f"region; a granted increase is not read); a publish enables it on 1 image's snapshots in "
                    f"{', '.join(zones)} and turns it off on the image its channel leaves")
            if len(used) < DEFAULT_QUOTA:
                found.add("quota", check, "ok", text)
            else:
                found.add("quota", check, "warn", text + ": the next publish goes on without FSR",
                          f"turn FSR off where no channel needs it (`aws ec2 disable-fast-snapshot-restores "
                          f"--region {region} ...`), or ask for more (Service Quotas, Amazon EBS, fast snapshot "
                          "restore)")

    def _fsr_snapshots_on(self, region: str) -> set[str]:
        params = {"Filters": [{"Name": "state", "Values": list(ON)}]}
        found: set[str] = set()
        while True:
            page = self._ec2("describe_fast_snapshot_restores", "read fast snapshot restore use", region, **params)
            found |= {item["SnapshotId"] for item in page.get("FastSnapshotRestores", [])
                      if item.get("State") in ON}
            if not page.get("NextToken"):
                return found
            params["NextToken"] = page["NextToken"]

    def _disable_pairs(self, region: str, pairs: list[tuple[str, str]]) -> None:
        """FSR off for those of these (snapshot, zone) pairs that are on (what an enable, even a
        partly failed one, turned on)."""
        state = self._fsr_state(region, sorted({s for s, _ in pairs}))
        on = [p for p in pairs if state.get(p) in ON]
        if on:
            self._fsr_call("disable", region, sorted({s for s, _ in on}), sorted({z for _, z in on}))

    def _release_fast_restore(self, moved: dict[str, str]) -> None:
        """After a channel moved ({region: the AMI it left}): FSR off for each AMI no channel
        parameter of its region points at any more. Failures are warnings."""
        for region, old in sorted(moved.items()):
            try:
                if old in self._channel_params(region).values():
                    continue
                image = self._image(old, region)
                if image is not None and self._disable_fast_restore(region, image):
                    self.log(f"aws: {old} left its last channel in {region}: fast snapshot restore turned off")
            except CloudError as exc:
                self.log(f"aws: warning: fast snapshot restore for {old} in {region} (no channel points at it) "
                         f"not turned off: {exc} (revoke or prune turns it off)")

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
