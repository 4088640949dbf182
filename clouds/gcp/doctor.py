"""`invoke doctor --cloud gcp`: what a bake needs in the project, read-only (a mixin of clouds.gcp.Adapter).

- Identity: Application Default Credentials and their project (google.auth.default).
- GPU quota: the accelerator's regional quota (regions.get: Region.quotas, e.g. NVIDIA_T4_GPUS) in
  every region of the manifest's zones, and the project's GPUS_ALL_REGIONS (projects.get:
  Project.quotas); each as usage, limit and what the build VM plus the test VM need. Source:
  https://cloud.google.com/compute/resource-usage#gpu_quota ("you must also have sufficient GPUs
  All Regions quota"), compute.v1.json Quota {metric, limit, usage}.
- Availability: acceleratorTypes.get in each zone (404: the zone does not offer it).
- Prerequisites: the base image resolves; the image family needs nothing (an image joins it when
  publishing creates it).
- Permissions: GCE has no dry run; README lists the roles.
"""
from __future__ import annotations

from core import settings

from ..findings import Findings, quota_line

CREDENTIALS_FIX = ("run `gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS to a key "
                   "file, or use workload identity federation in CI")
# Accelerator type -> its regional quota metric (compute.v1.json Quota.metric; the GPU quota table at
# https://cloud.google.com/compute/resource-usage#gpu_quota). Others: NVIDIA_<MODEL>_GPUS.
METRICS = {"nvidia-tesla-t4": "NVIDIA_T4_GPUS", "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
           "nvidia-tesla-p100": "NVIDIA_P100_GPUS", "nvidia-tesla-p4": "NVIDIA_P4_GPUS",
           "nvidia-tesla-k80": "NVIDIA_K80_GPUS", "nvidia-tesla-a100": "NVIDIA_A100_GPUS",
           "nvidia-a100-80gb": "NVIDIA_A100_80GB_GPUS", "nvidia-l4": "NVIDIA_L4_GPUS",
           "nvidia-h100-80gb": "NVIDIA_H100_GPUS"}
ROLES = ("roles/compute.instanceAdmin.v1, roles/compute.securityAdmin (the SSH firewall rules), "
         "roles/compute.storageAdmin (images) and roles/iam.serviceAccountUser")


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
        found.guard("prerequisites", "base image resolves",
                    "fix clouds.gcp.base_image (project and family or name)", lambda: self._base(found))
        zones = list(dict.fromkeys((self.g.zone, *self.g.fallback_zones)))
        if self.g.accelerator is None:
            found.add("quota", "GPU quota", "note", f"{self.g.machine_type} has no accelerator section: no GPU "
                      "quota checked (machine types with GPUs built in count against their own quota)")
        else:
            acc = self.g.accelerator
            needed = 2 * acc.count
            found.guard("quota", "GPUS_ALL_REGIONS", self._quota_fix("GPUS_ALL_REGIONS", "global", needed),
                        lambda: self._project_quota(found, needed))
            for region in dict.fromkeys(region_of(z) for z in zones):
                name = metric(acc.type)
                found.guard("quota", f"{name} in {region}", self._quota_fix(name, region, needed),
                            lambda region=region, name=name: self._region_quota(found, region, name, needed))
            for n, zone in enumerate(zones):
                found.guard("availability", f"{acc.type} in {zone}", "choose another zone or accelerator",
                            lambda zone=zone, n=n: self._offered(found, zone, n > 0))
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
        text, enough = quota_line(quota.usage, quota.limit, needed, "GPUs")
        found.add("quota", check, "ok" if enough else "fail", text,
                  "" if enough else self._quota_fix(name, where, int(quota.usage + needed)))

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

