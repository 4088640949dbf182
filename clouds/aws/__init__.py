"""AWS: AMIs, SSM parameters as channels, and a GPU test instance, through boto3.

The adapter is put together from the files beside this one: sdk.py (the call layer, the error
translator, waiters), credentials.py (build_session: credentials that outlive the bake), testvm.py
(the test instance), launch.py (`invoke launch`: a team member's instance), params.py (channels as SSM parameters), publish.py (region copies, sharing,
promote, revoke) and sweep.py (prune, discard, sweep). Packer builds the AMI in the manifest's
region; channel X in region R is the SSM parameter `<ssm_prefix>/X/image-id` (DataType
`aws:ec2:image`), so users launch with `resolve:ssm:/clara-train/stable/image-id`.
"""
from __future__ import annotations

import threading

from core.names import TAG_FINGERPRINT, TAG_VALIDATED

from ..base import CloudAdapter, Image, Log, Published
from .base_image import BaseImages
from .credentials import Credentials, credential_horizon, env_expiration
from .doctor import Doctor
from .labels import Labels
from .launch import Launches
from .params import Parameters
from .publish import TAG_MANIFEST, TAG_REVOKED, TAG_SOURCE_AMI, Publishing
from .sdk import CAPACITY_CODES, Calls, age, tags_of
from .sweep import Maintenance
from .testvm import TestVMs, cloud_init_user_data

__all__ = ["Adapter", "CAPACITY_CODES", "TAG_MANIFEST", "TAG_REVOKED", "TAG_SOURCE_AMI", "cloud_init_user_data",
           "credential_horizon", "env_expiration"]


class Adapter(BaseImages, Doctor, TestVMs, Launches, Labels, Publishing, Parameters, Maintenance, Credentials, Calls, CloudAdapter):
    name = "aws"
    running_attempts = 120        # waiter attempts (x delay) for instance_running / terminated
    image_attempts = 240          # for image_available (copies of a 100 GB AMI take a while)
    dependency_attempts = 12      # DeleteSecurityGroup while the ENI is still going away
    param_attempts = 15           # reads until a written aws:ec2:image parameter shows its new value

    def __init__(self, manifest, log: Log = print):
        super().__init__(manifest, log)
        self.a = manifest.clouds.aws
        self.region = self.a.region
        self._clients: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()

    def image_from_artifact(self, artifact, fingerprint: str) -> Image:
        """Packer's artifact ID is "us-east-1:ami-0abc" (one region: the copies come at publish)."""
        region, _, ami = artifact.artifact_id.split(",")[0].partition(":")
        return Image("aws", ami, "", region, fingerprint, artifact.custom_data.get("build_time", ""))

    def _regions(self) -> list[str]:
        return list(dict.fromkeys((self.region,) + tuple(self.a.copy_regions)))

    # --- build ---------------------------------------------------------------------------------
    def build_fallbacks(self) -> list[dict[str, str]]:
        """Packer variables to build with, in turn, when the manifest's type has no capacity."""
        return [{"instance_type": t} for t in self.a.fallback_instance_types if t != self.a.instance_type]

    def no_capacity(self, packer_output: str) -> bool:
        return any(code in packer_output for code in CAPACITY_CODES)

    def find_validated(self, fingerprint: str) -> Image | None:
        images = self._pages("describe_images", "Images", "find a validated image", Owners=["self"], Filters=[
            {"Name": f"tag:{TAG_FINGERPRINT}", "Values": [fingerprint[:32]]},
            {"Name": f"tag:{TAG_VALIDATED}", "Values": ["true"]},
            {"Name": "state", "Values": ["available"]}])
        images = [i for i in images if tags_of(i).get(TAG_REVOKED) != "true" and TAG_SOURCE_AMI not in tags_of(i)]
        if not images:
            return None
        return self._as_image(max(images, key=age))

    def published(self) -> list[Published]:
        """The home region's validated, unrevoked AMIs of this manifest (never the region copies), each
        with its copies and the channels whose SSM parameter in the home region points at it."""
        amis = [i for i in self._images(self.region, **{TAG_MANIFEST: self.manifest.name, TAG_VALIDATED: "true"})
                if i.get("State") == "available" and TAG_SOURCE_AMI not in tags_of(i)
                and tags_of(i).get(TAG_REVOKED) != "true"]
        pointing: dict[str, list[str]] = {}
        for name, ami in self._channel_params(self.region).items():
            pointing.setdefault(ami, []).append(name[len(self.a.ssm_prefix):].strip("/")[:-len("/image-id")])
        found = []
        for ami in sorted(amis, key=age):
            regions = [(self.region, ami["ImageId"])]
            for region in self._regions()[1:]:
                copies = [c["ImageId"] for c in self._images(region, **{TAG_SOURCE_AMI: ami["ImageId"]})
                          if c.get("State") == "available"]
                regions += [(region, copies[0])] if copies else []
            found.append(Published(ami["ImageId"], ami.get("Name", ""), tuple(regions),
                                   tags_of(ami).get(TAG_FINGERPRINT, ""), ami.get("CreationDate", ""),
                                   tuple(sorted(pointing.get(ami["ImageId"], [])))))
        return found

