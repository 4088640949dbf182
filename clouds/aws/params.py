"""Channels as SSM parameters: channel X in region R is `<ssm_prefix>/X/image-id` (DataType
`aws:ec2:image`) holding the AMI ID valid in R, so users launch with
`resolve:ssm:/clara-train/stable/image-id`."""
from __future__ import annotations

from core import cancel
from core.errors import CloudError

from .. import clients


class Parameters:
    """Reading and writing the channel parameters (a mixin of clouds.aws.Adapter)."""

    def _param(self, channel: str) -> str:
        return f"{self.a.ssm_prefix}/{channel}/image-id"

    def _get_param(self, region: str, name: str) -> str | None:
        try:
            return self._call("ssm", region, "get_parameter", f"read {name}", Name=name)["Parameter"]["Value"]
        except CloudError as exc:
            if exc.not_found:
                return None
            raise

    def _put_param(self, region: str, name: str, value: str) -> None:
        """Write a channel parameter and wait until it reads back. For DataType aws:ec2:image "a
        successful HTTP 200 response does not guarantee that your parameter was successfully
        created or updated. The aws:ec2:image value is validated asynchronously" (PutParameter,
        Systems Manager API Reference): a value that never appears is an error."""
        version = self._call("ssm", region, "put_parameter", f"write {name}", Name=name, Value=value,
                             Type="String", DataType="aws:ec2:image", Overwrite=True,
                             Description=f"{self.manifest.name}: current AMI of this channel (clara-bake)"
                             ).get("Version", 0)
        delay = clients.poll_interval(2.0)
        for attempt in range(self.param_attempts):
            found = self._param_version(region, name)
            if found and found[0] == value and found[1] >= version:
                return
            if attempt + 1 < self.param_attempts:
                cancel.sleep(delay)
        raise CloudError(f"aws: {name} in {region} does not read {value} after writing it: Parameter Store's "
                       "asynchronous aws:ec2:image validation refused it (is the AMI available in this "
                       "account and region?)")

    def _param_version(self, region: str, name: str) -> tuple[str, int] | None:
        try:
            p = self._call("ssm", region, "get_parameter", f"read {name}", Name=name)["Parameter"]
        except CloudError as exc:
            if exc.not_found:
                return None
            raise
        return p["Value"], int(p.get("Version", 0))

    def _delete_param(self, region: str, name: str) -> None:
        try:
            self._call("ssm", region, "delete_parameter", f"delete {name}", Name=name)
        except CloudError as exc:
            if not exc.not_found:
                raise

    def _channel_params(self, region: str) -> dict[str, str]:
        """{parameter name: AMI ID} of every channel parameter under the prefix in a region."""
        found: dict[str, str] = {}
        kwargs = {"Path": self.a.ssm_prefix, "Recursive": True}
        while True:
            page = self._call("ssm", region, "get_parameters_by_path", f"list {self.a.ssm_prefix}", **kwargs)
            for p in page.get("Parameters", []):
                if p["Name"].endswith("/image-id"):
                    found[p["Name"]] = p["Value"]
            if not page.get("NextToken"):
                return found
            kwargs["NextToken"] = page["NextToken"]

