"""`invoke doctor --cloud gcp`: what a bake needs in the project, read-only (a mixin of clouds.gcp.Adapter).

- Identity: Application Default Credentials and their project (google.auth.default).
- GPU quota: the accelerator's regional quota (regions.get: Region.quotas, e.g. NVIDIA_T4_GPUS) in
  every region of the manifest's zones, and the project's GPUS_ALL_REGIONS (projects.get:
  Project.quotas); each as usage, limit and what the test VM needs (plus the build VM when it builds
  with the accelerator: build_machine_type null or machine_type). Source:
  https://cloud.google.com/compute/resource-usage#gpu_quota ("you must also have sufficient GPUs
  All Regions quota"), compute.v1.json Quota {metric, limit, usage}.
- Availability: acceleratorTypes.get in each zone (404: the zone does not offer it).
- OS Login: the project's enable-oslogin metadata, the org policy compute.requireOsLogin where
  readable (else "unknown"), the mode a bake uses and the role it needs (clouds/gcp/oslogin.py).
- Prerequisites: the base image resolves; the image family needs nothing (an image joins it when
  publishing creates it).
- Permissions: GCE has no dry run; README lists the roles.
"""
from __future__ import annotations

from core import settings

from ..findings import Findings, quota_line
from ..runner_check import runner_findings
from . import permissions

CREDENTIALS_FIX = ("run `gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS to a key "
                   "file, or use workload identity federation in CI")
# Accelerator type -> its regional quota metric (compute.v1.json Quota.metric; the GPU quota table at
# https://cloud.google.com/compute/resource-usage#gpu_quota). Others: NVIDIA_<MODEL>_GPUS.
METRICS = {"nvidia-tesla-t4": "NVIDIA_T4_GPUS", "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
           "nvidia-tesla-p100": "NVIDIA_P100_GPUS", "nvidia-tesla-p4": "NVIDIA_P4_GPUS",
           "nvidia-tesla-k80": "NVIDIA_K80_GPUS", "nvidia-tesla-a100": "NVIDIA_A100_GPUS",
           "nvidia-a100-80gb": "NVIDIA_A100_80GB_GPUS", "nvidia-l4": "NVIDIA_L4_GPUS",
           "nvidia-h100-80gb": "NVIDIA_H100_GPUS"}
ROLES = permissions.ROLES      # clouds/gcp/permissions.py: the roles that grant its list


NETWORK_CHECK = "network gives the VMs a public address"
PLACEHOLDER_PROJECT = "clara-images"      # manifests/clara-train.yaml: "set your project in a site file"


def metric(accelerator: str) -> str:
    if accelerator in METRICS:
        return METRICS[accelerator]
    model = accelerator.removeprefix("nvidia-").removeprefix("tesla-")
    return f"NVIDIA_{model.upper().replace('-', '_')}_GPUS"


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


class Doctor:
    """doctor() (a mixin of clouds.gcp.Adapter)."""

    def doctor(self) -> Findings:
        found = Findings("gcp")
        found.guard("identity", "Application Default Credentials", CREDENTIALS_FIX, lambda: self._who(found))
        if found.failed("identity"):
            return found             # every other check would fail the same way
        found.guard("identity", "OS Login", "grant compute.projects.get (roles/compute.viewer) to read the project",
                    lambda: self.os_login_findings(found))     # clouds/gcp/oslogin.py
        found.guard("prerequisites", "base image resolves",
                    "fix clouds.gcp.base_image (project and family or name)", lambda: self._base(found))
        zones = list(dict.fromkeys((self.g.zone, *self.g.fallback_zones)))
        if self.g.accelerator is None:
            found.add("quota", "GPU quota", "note", f"{self.g.machine_type} has no accelerator section: no GPU "
                      "quota checked (machine types with GPUs built in count against their own quota)")
        else:
            acc = self.g.accelerator
            # The test VM's GPUs, plus the build VM's when it builds with the accelerator attached (#28:
            # the default builds on build_machine_type, a CPU type: one GPU, not two).
            needed = acc.count + (acc.count if self.g.build_accelerator() else 0)
            found.guard("quota", "GPUS_ALL_REGIONS", self._quota_fix("GPUS_ALL_REGIONS", "global", needed),
                        lambda: self._project_quota(found, needed))
            for region in dict.fromkeys(region_of(z) for z in zones):
                name = metric(acc.type)
                found.guard("quota", f"{name} in {region}", self._quota_fix(name, region, needed),
                            lambda region=region, name=name: self._region_quota(found, region, name, needed))
            for n, zone in enumerate(zones):
                found.guard("availability", f"{acc.type} in {zone}", "choose another zone or accelerator",
                            lambda zone=zone, n=n: self._offered(found, zone, n > 0))
        found.guard("prerequisites", NETWORK_CHECK, "grant compute.networks.get and compute.subnetworks.get "
                    "(roles/compute.networkViewer), or check clouds.gcp.network by hand", lambda: self._network(found))
        runner_findings(found)
        found.add("prerequisites", f"image family {self.g.image_family}", "ok",
                  "nothing to create first: publishing adds the first image to the family")
        found.add("permissions", "roles", "note", "GCE has no dry run: the roles are checked when the bake calls",
                  f"grant {ROLES} on project {self.project} (README: first bake on your own account)")
        return found

    def _quota_fix(self, name: str, where: str, needed: int) -> str:
        return (f"ask for {name} >= {{want}} ({where}) in the console: IAM & Admin > Quotas, filter "
                f"'{name}', project {self.project}").replace("{want}", str(needed))

    def _who(self, found: Findings) -> None:
        endpoint = settings.gce_endpoint()
        if endpoint:
            found.add("identity", "Application Default Credentials", "note",
                      f"CLARA_GCE_ENDPOINT={endpoint}: anonymous credentials for that endpoint")
            return
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
        try:
            credentials, adc_project = google.auth.default()
        except DefaultCredentialsError:
            found.add("identity", "Application Default Credentials", "fail", "no credentials found", CREDENTIALS_FIX)
            return
        who = getattr(credentials, "service_account_email", None) or "the user of `gcloud auth application-default login`"
        if self.project == PLACEHOLDER_PROJECT:
            # Not yours: every quota and permission line would describe someone else's project.
            found.add("identity", "Application Default Credentials", "fail",
                      f"signed in as {who}, but clouds.gcp.project is {PLACEHOLDER_PROJECT}, which is the default "
                      "manifest's placeholder, not your project",
                      f"set clouds.gcp.project to your project in a site file (manifests/site.example.yaml) and pass "
                      f"--manifest SITE{' (your credentials default to ' + adc_project + ')' if adc_project else ''}")
            return
        note = "" if adc_project in (None, self.project) else f" (their default project is {adc_project})"
        found.add("identity", "Application Default Credentials", "ok",
                  f"project {self.project}{note}, principal {who}")

    def _project_quota(self, found: Findings, needed: int) -> None:
        from google.cloud import compute_v1 as c
        project = self._call("ProjectsClient", "get", c.GetProjectRequest(project=self.project),
                             f"read project {self.project}")
        self._quota_row(found, project.quotas, "GPUS_ALL_REGIONS", "global", needed)

    def _region_quota(self, found: Findings, region: str, name: str, needed: int) -> None:
        from google.cloud import compute_v1 as c
        answer = self._call("RegionsClient", "get", c.GetRegionRequest(project=self.project, region=region),
                            f"read region {region}")
        self._quota_row(found, answer.quotas, name, region, needed)

    def _quota_row(self, found: Findings, quotas, name: str, where: str, needed: int) -> None:
        check = name if where == "global" else f"{name} in {where}"
        quota = next((q for q in quotas if q.metric == name), None)
        if quota is None:
            found.add("quota", check, "fail", f"project {self.project} has no {name} quota in {where}",
                      self._quota_fix(name, where, needed))
            return
        text, enough = quota_line(quota.usage, quota.limit, needed, "GPUs",
                                  "test VM + build VM" if self.g.build_accelerator() else "test VM")
        found.add("quota", check, "ok" if enough else "fail", text,
                  "" if enough else self._quota_fix(name, where, int(quota.usage + needed)))

    def _network(self, found: Findings) -> None:
        """clouds.gcp.network exists in the project, and the VMs get a subnetwork in their region: the
        one named, or an auto-mode network's own. Every VM gets an external address (an access config)."""
        from google.cloud import compute_v1 as c
        from core.errors import CloudError
        name, region = self.g.network, region_of(self.g.zone)
        try:
            network = self._call("NetworksClient", "get", c.GetNetworkRequest(project=self.project, network=name),
                                 f"read network {name}")
        except CloudError as exc:
            if not exc.not_found:
                raise
            default = name == "default"
            found.add("prerequisites", NETWORK_CHECK, "fail", f"network {name} does not exist in project {self.project}"
                      + (" (its default network was deleted)" if default else ""),
                      (f"`gcloud compute networks create default --subnet-mode=auto --project {self.project}`, or "
                       "set clouds.gcp.network (and subnetwork) to an existing one") if default else
                      f"set clouds.gcp.network to a network of {self.project} (`gcloud compute networks list "
                      f"--project {self.project}`)")
            return
        if self.g.subnetwork:
            try:
                sub = self._call("SubnetworksClient", "get", c.GetSubnetworkRequest(
                    project=self.project, region=region, subnetwork=self.g.subnetwork),
                    f"read subnetwork {self.g.subnetwork}")
            except CloudError as exc:
                if not exc.not_found:
                    raise
                sub = None
            if sub is None or sub.network.rsplit("/", 1)[-1] != name:
                found.add("prerequisites", NETWORK_CHECK, "fail", f"subnetwork {self.g.subnetwork} is not a subnetwork "
                          f"of {name} in {region}", f"`gcloud compute networks subnets list --network {name} "
                          f"--regions {region} --project {self.project}`, and set clouds.gcp.subnetwork to one")
                return
            found.add("prerequisites", NETWORK_CHECK, "ok", f"network {name}, subnetwork {self.g.subnetwork} "
                      f"({sub.ip_cidr_range}) in {region}; the VMs get an external address")
        elif not network.auto_create_subnetworks:
            found.add("prerequisites", NETWORK_CHECK, "fail", f"network {name} is a custom-mode network: GCE needs "
                      "the VMs' subnetwork named", f"set clouds.gcp.subnetwork to a subnetwork of {name} in {region}")
        else:
            found.add("prerequisites", NETWORK_CHECK, "ok", f"network {name} (auto mode: a subnetwork in {region}); "
                      "the VMs get an external address")

    def _offered(self, found: Findings, zone: str, fallback: bool) -> None:
        from google.cloud import compute_v1 as c
        from core.errors import CloudError
        acc = self.g.accelerator
        check = f"{acc.type} in {zone}" + (" (fallback)" if fallback else "")
        try:
            self._call("AcceleratorTypesClient", "get", c.GetAcceleratorTypeRequest(
                project=self.project, zone=zone, accelerator_type=acc.type), f"read {acc.type} in {zone}")
        except CloudError as exc:
            if not exc.not_found:
                raise
            found.add("availability", check, "warn" if fallback else "fail", f"{zone} does not offer {acc.type}",
                      f"choose a zone that does: `gcloud compute accelerator-types list --filter=name={acc.type}`")
            return
        found.add("availability", check, "ok", f"{zone} offers {acc.type}")

    def _base(self, found: Findings) -> None:
        base = self.resolve_base_image()
        found.add("prerequisites", "base image resolves", "ok", f"{self.g.base_image.project}/{base.id}")

