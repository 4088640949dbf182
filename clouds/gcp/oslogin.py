"""OS Login: which way the build and test VMs take SSH keys, and the test VM's key in OS Login.

Two ways (https://cloud.google.com/compute/docs/oslogin/set-up-oslogin): metadata keys, which work
while OS Login is off for the instance (an instance's `enable-oslogin` overrides the project's), and
OS Login, where keys live in the caller's login profile. An organisation that enforces the boolean
constraint `compute.requireOsLogin` turns OS Login on for every VM, and no metadata key works then.

`clouds.gcp.os_login` (docs/MANIFEST.md): "off", "required", or "auto": required when the org policy
is enforced (read where the identity may) or the project's metadata sets enable-oslogin TRUE.

In OS Login mode the test VM's public key is imported into the identity's profile
(`users.importSshPublicKey` with projectId and an expiry, so a killed bake's key lapses by itself),
the checks log in as the profile's primary POSIX username, and the key is deleted with the VM.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from core.errors import CloudError, PipelineError

from .. import clients
from ..common import TEST_TTL

CONSTRAINT = "compute.requireOsLogin"
KEY_KIND = "sshPublicKeys"          # what a key's resource path ends in: users/<email>/sshPublicKeys/<fp>


@dataclass(frozen=True)
class Mode:
    os_login: bool                 # True: OS Login; False: metadata keys with enable-oslogin FALSE
    why: str
    project: str                   # the project's enable-oslogin metadata: TRUE, FALSE or "unset"
    policy: str                    # the org policy: "enforced", "not enforced" or "unknown (...)"


def truthy(value: str) -> bool:
    """enable-oslogin's documented values are TRUE and FALSE; read case-insensitively."""
    return value.strip().lower() == "true"


class OsLogin:
    """os_login_mode, the test VM's OS Login key (a mixin of clouds.gcp.Adapter)."""

    def os_login_mode(self) -> Mode:
        """The mode this bake uses (read once per adapter)."""
        if getattr(self, "_os_login", None) is None:
            self._os_login = self._decide_os_login()
        return self._os_login

    def _decide_os_login(self) -> Mode:
        chosen = self.g.os_login
        if chosen != "auto":               # nothing to read: a read the bake does not need cannot fail it
            return Mode(chosen == "required", f"clouds.gcp.os_login is {chosen}", "not read", "not read")
        return self._choose(self._project_os_login(), self._org_policy())

    def _choose(self, project: str, policy: str) -> Mode:
        """auto's rule: OS Login where the org policy or the project's metadata turns it on."""
        if policy == "enforced":
            return Mode(True, f"auto: the org policy {CONSTRAINT} is enforced", project, policy)
        if project != "unset" and truthy(project):
            return Mode(True, f"auto: project {self.project} sets enable-oslogin={project}", project, policy)
        return Mode(False, f"auto: OS Login is not on for project {self.project} (metadata "
                           f"enable-oslogin {project}, org policy {policy})", project, policy)

    def _project_os_login(self) -> str:
        from google.cloud import compute_v1 as c
        project = self._call("ProjectsClient", "get", c.GetProjectRequest(project=self.project),
                             f"read project {self.project}")
        items = project.common_instance_metadata.items if "common_instance_metadata" in project else []
        return next((i.value for i in items if i.key == "enable-oslogin"), "unset")

    def _org_policy(self) -> str:
        """"enforced", "not enforced", or "unknown (why)": the identity may not read it."""
        from google.auth.exceptions import GoogleAuthError
        try:
            policy = clients.effective_org_policy(self.project, CONSTRAINT)
        except PipelineError as exc:        # refused (403 without orgpolicy.policies.get), or not sent
            return f"unknown ({exc})"
        except (OSError, GoogleAuthError) as exc:   # requests' transport errors are OSErrors: never a traceback
            return f"unknown (the Org Policy API could not be reached: {type(exc).__name__})"
        rules = policy.get("spec", {}).get("rules", [])
        return "enforced" if any(r.get("enforce") is True for r in rules) else "not enforced"

    # --- invoke doctor -------------------------------------------------------------------------
    def os_login_findings(self, found) -> None:
        """Which mode the project is in and what the identity needs for it (doctor's identity area)."""
        project, policy = self._project_os_login(), self._org_policy()
        chosen = self.g.os_login
        mode = self._choose(project, policy) if chosen == "auto" else Mode(
            chosen == "required", f"clouds.gcp.os_login is {chosen}", project, policy)
        facts = (f"project metadata enable-oslogin {project}; org policy {CONSTRAINT} {policy}; "
                 f"{mode.why}")
        if mode.os_login:
            found.add("identity", "OS Login", "note", f"{facts}: the build and test VMs use OS Login",
                      f"the identity ({self._identity_or_unknown()}) needs roles/compute.osAdminLogin on project "
                      f"{self.project} (provisioning and the checks use sudo), and roles/iam.serviceAccountUser "
                      "on a service account attached to a VM (the build and test VMs have none)")
        elif policy == "enforced":
            # "Requests that set enable-oslogin to false in VM or project metadata are rejected"
            # (https://cloud.google.com/compute/docs/oslogin/manage-oslogin-in-an-org).
            found.add("identity", "OS Login", "fail", f"{facts}: where the organisation requires OS Login, "
                      "GCE rejects a VM whose metadata sets enable-oslogin FALSE; the build VM would not start",
                      "set clouds.gcp.os_login: auto or required, and grant roles/compute.osAdminLogin")
        elif policy.startswith("unknown"):
            found.add("identity", "OS Login", "unknown", f"{facts}: metadata SSH keys with the VMs' "
                      "enable-oslogin FALSE", f"if the organisation enforces {CONSTRAINT}, set "
                      "clouds.gcp.os_login: required (reading the policy needs orgpolicy.policies.get)")
        else:
            found.add("identity", "OS Login", "ok", f"{facts}: metadata SSH keys with the VMs' enable-oslogin FALSE")

    def _identity_or_unknown(self) -> str:
        try:
            return clients.gcp_identity()
        except PipelineError as exc:
            return f"unknown: {str(exc).splitlines()[0][:120]}"

    # --- the test VM's key ---------------------------------------------------------------------
    def _oslogin_client(self):
        if "oslogin" not in self._clients:
            self._clients["oslogin"] = clients.oslogin()
        return self._clients["oslogin"]

    def _oslogin_call(self, method: str, request, what: str):
        from google.api_core import exceptions as gexc
        from .sdk import translate
        try:
            return getattr(self._oslogin_client(), method)(request=request, retry=clients.gce_retry())
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, what) from None

    def import_test_key(self, public_key: str, created: list, expires: bool = True) -> str:
        """The test VM's key in the identity's OS Login profile (expiring with the VM's TTL; a
        launch's key does not expire); its resource path goes into `created`; the POSIX username to
        log in as."""
        from google.cloud import oslogin_v1
        from google.cloud.oslogin_v1 import common
        user = clients.gcp_identity()
        key = public_key.strip()
        expires = int((time.time() + TEST_TTL.total_seconds()) * 1_000_000) if expires else 0
        # In `created` before the call: a key the service wrote before an error (retries spent, an
        # interrupt) is still deleted. Its fingerprint is the SHA-256 hex of the key text sent, as
        # Packer's googlecompute deletes it (step_import_os_login_ssh_key.go, 1.6.6 and the plugin).
        path = f"users/{user}/{KEY_KIND}/{hashlib.sha256(key.encode()).hexdigest()}"
        created.append(path)
        answer = self._oslogin_call("import_ssh_public_key", oslogin_v1.ImportSshPublicKeyRequest(
            parent=f"users/{user}", project_id=self.project,
            ssh_public_key=common.SshPublicKey(key=key, **({"expiration_time_usec": expires} if expires else {}))),
            f"import the test VM's key into {user}'s OS Login profile")
        profile = answer.login_profile
        fingerprint = next((fp for fp, k in profile.ssh_public_keys.items() if k.key.strip() == key), "")
        if fingerprint:
            created[created.index(path)] = f"users/{user}/{KEY_KIND}/{fingerprint}"   # the service's name wins
        accounts = list(profile.posix_accounts)
        account = next((a for a in accounts if a.primary), accounts[0] if accounts else None)
        if not fingerprint or account is None or not account.username:
            raise CloudError(f"gcp: OS Login answered without {'the key' if not fingerprint else 'a POSIX account'} "
                             f"for {user}: cannot log in to the test VM")
        self.log(f"gcp: {'test VM key' if expires else 'your key'} in {user}'s OS Login profile (log in as "
                 f"{account.username}" + (f", expires in {TEST_TTL.total_seconds() / 3600:.0f} h)" if expires else ")"))
        return account.username

    def delete_key(self, path: str) -> None:
        from google.cloud import oslogin_v1
        self._oslogin_call("delete_ssh_public_key", oslogin_v1.DeleteSshPublicKeyRequest(name=path),
                           f"delete the OS Login key {path}")
