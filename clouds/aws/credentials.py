"""Credentials that outlive the bake, checked before Packer starts (Packer gets the same ones).

Static session keys (what configure-aws-credentials exports) renew in neither Packer nor boto3:
`build_session` refuses them when their known expiry (AWS_CREDENTIAL_EXPIRATION) comes before the
bake may end, and warns where it cannot know.
"""
from __future__ import annotations

import base64
import json
import os
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from core.errors import CloudError
from core.names import RUNNER_CIDR

from .. import clients

# The longest a bake's build may take with the manifest's type: provisioning (a 15 GB pull on a
# DLAMI base: about 1 h on g4dn.4xlarge, awslabs/awsome-distributed-ai#92) plus Packer's wait for
# the AMI (aws_polling in packer/sources/aws.py: 240 x 15 s).
LONGEST_BUILD = timedelta(hours=2)
CHECKS_ALLOWANCE = timedelta(minutes=30)        # the checks themselves, service smoke test included


def as_utc(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))



def credential_horizon(method: str, environ) -> tuple[datetime | None, str]:
    """(when credentials of botocore's `method` stop working, None if not known to end; what they are).

    env: AWS_CREDENTIAL_EXPIRATION, which botocore's EnvProvider reads. Web identity: botocore
    re-assumes the role near expiry by reading the token file again, which works only while the
    token in it is valid (GitHub's ID token lasts 5 minutes)."""
    if method == "assume-role-with-web-identity":
        path = environ.get("AWS_WEB_IDENTITY_TOKEN_FILE", "")
        return _jwt_expiry(path), f"the web identity token in {path}"
    if method == "env" and environ.get("AWS_CREDENTIAL_EXPIRATION"):
        return env_expiration(environ), f"AWS_CREDENTIAL_EXPIRATION={environ['AWS_CREDENTIAL_EXPIRATION']}"
    return None, method


def env_expiration(environ) -> datetime | None:
    """AWS_CREDENTIAL_EXPIRATION, checked before botocore reads it: botocore raises a bare
    ParserError on every client for a value it cannot parse."""
    raw = environ.get("AWS_CREDENTIAL_EXPIRATION", "")
    if not raw:
        return None
    try:
        return as_utc(raw)
    except ValueError:
        raise CloudError(f"aws: AWS_CREDENTIAL_EXPIRATION={raw!r} is not an ISO 8601 time like "
                         "2026-01-31T12:00:00Z (configure-aws-credentials' aws-expiration output is "
                         "JSON-quoted: strip the quotes)") from None


def _jwt_expiry(path: str) -> datetime | None:
    """The `exp` claim of the JWT in a file (unverified: only to know when it stops working)."""
    try:
        payload = open(path, encoding="ascii").read().strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), timezone.utc)
    except (OSError, IndexError, ValueError, KeyError, TypeError, UnicodeError):
        return None



class Credentials:
    """build_session and the credential check (a mixin of clouds.aws.Adapter)."""

    @contextmanager
    def build_session(self, run):
        """Credentials that outlive the bake, checked before Packer starts; Packer's temporary
        security group admits this runner only."""
        self.check_credentials()
        yield {"vars": {RUNNER_CIDR: clients.runner_cidr()}}

    def expected_bake_time(self) -> timedelta:
        """The longest this bake may run from the build on: the build, the test VM's bounded waits
        and its checks, and the region copies (in parallel, each bounded by image_attempts)."""
        test = timedelta(seconds=self.running_attempts * 5 + self.manifest.validation.ssh_timeout_s)
        copies = timedelta(seconds=self.image_attempts * 15) if len(self._regions()) > 1 else timedelta()
        return LONGEST_BUILD + test + CHECKS_ALLOWANCE + copies

    def check_credentials(self, now: datetime | None = None) -> None:
        """Refuse a bake its credentials expire before: Packer gets the same credentials, and static
        session keys (what configure-aws-credentials exports) renew in neither Packer nor boto3."""
        import boto3                              # the chain every clients.aws client resolves
        env_expiration(os.environ)                # a value botocore cannot parse: a clear error first
        creds = boto3.Session().get_credentials()
        if creds is None:
            return                                # the first call says "Unable to locate credentials"
        now, need = now or datetime.now(timezone.utc), self.expected_bake_time()
        ends, source = credential_horizon(creds.method, os.environ)
        hours = f"{need.total_seconds() / 3600:.1f} h"
        if creds.method == "env" and ends is None and os.environ.get("AWS_SESSION_TOKEN"):
            self.log(f"aws: warning: temporary credentials (AWS_SESSION_TOKEN) of unknown lifetime; this bake "
                     f"may take {hours}. Set AWS_CREDENTIAL_EXPIRATION so it can be checked")
        if ends is None or ends >= now + need:
            return
        when = ends.strftime("%Y-%m-%d %H:%M UTC")
        if creds.method == "assume-role-with-web-identity":
            self.log(f"aws: warning: {source} expires at {when}, and this bake may take {hours}: after it, "
                     "botocore and Packer cannot renew the role session unless something rewrites the file")
            return
        raise CloudError(
            f"aws: the credentials ({source}) expire at {when}, before this bake may end ({hours} from now: "
            "build, test VM, region copies). Use a longer session (configure-aws-credentials' "
            "role-duration-seconds, which the role's MaxSessionDuration must allow) or credentials the SDKs "
            "renew themselves (a profile with role_arn, SSO, web identity)")

