"""Retention and leftovers: `prune` keeps the newest `keep` validated AMIs per channel (and `keep`
channel-less ones) and never deletes one an SSM channel parameter points at in any region;
`discard` deletes a failed build's AMI; `sweep` deletes expired build and test resources in the
manifest's region, where they live.

Packer 1.6.6 (Debian's, which builds AWS here) does not apply `run_tags` to its temporary security
group and key pair (the current plugin does: StepSecurityGroup/StepKeyPair take `Tags: RunTags`), so
a killed build leaves them untagged. Sweep finds those by Packer's own naming: both are named
`packer_` + uuid.TimeOrderedUUID() (builder/amazon/common/step_security_group.go, run_config.go at
v1.6.6), whose first 8 hex digits are the Unix time the name was made (packer-plugin-sdk/uuid), and
the group's description is "Temporary group for Packer". Age: a key pair's CreateTime
(DescribeKeyPairs), else the time in its name; a security group has no creation time in the API, so
the time in its name. Only untagged ones (a tagged one is a current plugin's: the tag sweep's), and
only what nothing uses: no network interface references the group (but those of instances this
sweep terminates), no live instance was launched with the key pair.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

from core.names import TAG_BAKE_ID, TAG_EXPIRES, TAG_ROLE, TAG_VALIDATED

from ..base import Image
from ..common import channels, stale, utcnow
from .publish import TAG_MANIFEST, TAG_SOURCE_AMI
from .credentials import as_utc
from .sdk import tags_of

SWEEP_ROLES = ("build", "test")
PACKER_NAME = re.compile(r"packer_([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PACKER_GROUP_DESCRIPTION = "Temporary group for Packer"
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


def packer_name_time(name: str) -> datetime | None:
    """When Packer made this temporary resource's name (None: not Packer's naming)."""
    match = PACKER_NAME.fullmatch(name or "")
    return datetime.fromtimestamp(int(match.group(1), 16), timezone.utc) if match else None


class Maintenance:
    """prune, discard and sweep (a mixin of clouds.aws.Adapter)."""

    def prune(self, keep: int, dry_run: bool) -> list[str]:
        images = [i for i in self._images(**{TAG_MANIFEST: self.manifest.name, TAG_VALIDATED: "true"})
                  if TAG_SOURCE_AMI not in tags_of(i)]                       # newest first
        groups: dict[str, list[str]] = {}
        for img in images:
            for channel in channels(tags_of(img)) or ("",):
                groups.setdefault(channel, []).append(img["ImageId"])
        kept = {ami for members in groups.values() for ami in members[:keep]}
        pointed = {v for region in self._regions() for v in self._channel_params(region).values()}
        doomed: list[str] = []
        plan: list[tuple[str, str]] = []
        for img in images:
            ami = img["ImageId"]
            if ami in kept:
                continue
            lineage = self._lineage(ami)
            if any(a["ImageId"] in pointed for a in lineage.values()):
                self.log(f"aws: keeping {ami}: a channel parameter points at it")
                continue
            doomed.append(ami)
            plan += [(r, a["ImageId"]) for r, a in lineage.items()]
        if not dry_run:
            for region, ami in reversed(plan):               # copies before their source
                # Deleting a snapshot turns its FSR off too (EBS User Guide, "Configure fast snapshot
                # restore"); explicitly first, so a snapshot that outlives its AMI stops billing.
                self._disable_fast_restore(region, self._image(ami, region) or {"ImageId": ami})
                self._delete_image(region, ami)
        else:
            for region, ami in plan:
                self.log(f"aws: would delete {ami} in {region}")
        return doomed

    def discard(self, image: Image) -> None:
        """Delete an unpublished built AMI (after failed checks); never a validated one."""
        region = image.region or self.region
        img = self._image(image.id, region)
        if img is None or tags_of(img).get(TAG_VALIDATED) == "true" or TAG_BAKE_ID not in tags_of(img):
            return
        self._delete_image(region, image.id)


    def sweep(self, older_than_s: int, dry_run: bool) -> list[str]:
        now = utcnow()

        def old(tags: dict, created) -> bool:
            return stale(tags.get(TAG_EXPIRES, ""), as_utc(created) if created is not None else None, now, older_than_s)

        ours = [{"Name": "tag-key", "Values": [TAG_BAKE_ID]}, {"Name": f"tag:{TAG_ROLE}", "Values": list(SWEEP_ROLES)}]
        r = self.region
        instances = [i for res in self._pages("describe_instances", "Reservations", "list tagged instances", r,
                                              Filters=ours + [{"Name": "instance-state-name", "Values": [
                                                  "pending", "running", "stopping", "stopped"]}])
                     for i in res["Instances"] if old(tags_of(i), i.get("LaunchTime"))]
        groups = [g for g in self._pages("describe_security_groups", "SecurityGroups", "list tagged security groups",
                                         r, Filters=ours) if old(tags_of(g), None)]
        keys = [k for k in self._ec2("describe_key_pairs", "list tagged key pairs", r, Filters=ours)["KeyPairs"]
                if old(tags_of(k), k.get("CreateTime"))]          # DescribeKeyPairs has no pagination
        volumes = [v for v in self._pages("describe_volumes", "Volumes", "list tagged volumes", r, Filters=ours + [
                   {"Name": "status", "Values": ["available"]}]) if old(tags_of(v), v.get("CreateTime"))]
        doomed = {i["InstanceId"] for i in instances}
        groups += self._packer_groups(r, lambda created: old({}, created), doomed)
        keys += self._packer_key_pairs(r, lambda created: old({}, created), doomed)
        found = ([i["InstanceId"] for i in instances] + [g["GroupId"] for g in groups]
                 + [f"key-pair/{k['KeyName']}" for k in keys] + [v["VolumeId"] for v in volumes])
        if dry_run or not found:
            return found
        ids = [i["InstanceId"] for i in instances]
        if ids:
            self._ec2("terminate_instances", "terminate leaked instances", r, InstanceIds=ids)
            self._wait(r, "instance_terminated", f"{len(ids)} instance(s) to terminate", self.running_attempts,
                       InstanceIds=ids)
            self.log(f"aws: terminated {', '.join(ids)}")
        for g in groups:
            self._delete_security_group(r, g["GroupId"])
        for k in keys:
            self._ec2("delete_key_pair", f"delete key pair {k['KeyName']}", r, KeyName=k["KeyName"])
            self.log(f"aws: deleted key pair {k['KeyName']}")
        for v in volumes:
            self._delete_volume(r, v["VolumeId"])
        return found

    def _packer_groups(self, region: str, old, doomed: set[str]) -> list[dict]:
        """Packer 1.6.6's untagged temporary security groups, old by the time in their name, that no
        network interface uses (those of instances this sweep terminates are going away)."""
        found = []
        for g in self._pages("describe_security_groups", "SecurityGroups", "list Packer's temporary groups", region,
                             Filters=[{"Name": "group-name", "Values": ["packer_*"]},
                                      {"Name": "description", "Values": [PACKER_GROUP_DESCRIPTION]}]):
            created = packer_name_time(g.get("GroupName", ""))
            if (created is None or g.get("Description") != PACKER_GROUP_DESCRIPTION or tags_of(g)
                    or not old(created)):
                continue
            users = self._pages("describe_network_interfaces", "NetworkInterfaces", f"network interfaces of {g['GroupId']}",
                                region, Filters=[{"Name": "group-id", "Values": [g["GroupId"]]}])
            if all((n.get("Attachment") or {}).get("InstanceId") in doomed for n in users):
                found.append(g)
        return found

    def _packer_key_pairs(self, region: str, old, doomed: set[str]) -> list[dict]:
        """Packer 1.6.6's untagged temporary key pairs, old by CreateTime (else the time in their
        name), with which no live instance (but those this sweep terminates) was launched."""
        found = []
        for k in self._ec2("describe_key_pairs", "list Packer's temporary key pairs", region,
                           Filters=[{"Name": "key-name", "Values": ["packer_*"]}])["KeyPairs"]:
            named = packer_name_time(k.get("KeyName", ""))
            if named is None or tags_of(k):
                continue
            if not old(as_utc(k["CreateTime"]) if k.get("CreateTime") is not None else named):
                continue
            users = [i["InstanceId"] for res in self._pages(
                "describe_instances", "Reservations", f"instances of key pair {k['KeyName']}", region,
                Filters=[{"Name": "key-name", "Values": [k["KeyName"]]},
                         {"Name": "instance-state-name", "Values": LIVE_STATES}]) for i in res["Instances"]]
            if set(users) <= doomed:
                found.append(k)
        return found
