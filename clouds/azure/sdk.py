"""The call layer to the azure-mgmt SDKs: clients, the error translator, long-running operations.

Clients come only from clouds.clients.azure(), with azure-core's RetryPolicy configured there: it
retries throttling, 5xx and connection errors, the only retries of an HTTP call. What it cannot
retry is an operation that ARM accepted and that then ended Failed with a transient code
(InternalExecutionError...): the poll that says so answered 200. `_lro` starts such an operation
again, bounded; nothing else is retried here. Request bodies are built only with the SDK's model
classes (plain dicts would be sent verbatim).
"""
from __future__ import annotations

import datetime as dt
import functools
import re
import time
from typing import Callable

from core import cancel
from core.errors import CloudError, PipelineError

from .. import clients

CAPACITY_CODES = {"SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed",
                  "OverconstrainedAllocationRequest", "OverconstrainedZonalAllocationRequest"}
TRANSIENT_CODES = {"InternalServerError", "InternalExecutionError", "InternalOperationError",
                   "OperationPreempted", "RetryableError", "ServiceUnavailable", "TooManyRequests",
                   "GatewayTimeout", "RequestTimeout", "Throttled", "OperationTimedOut"}
COMPUTE = "azure.mgmt.compute.ComputeManagementClient"
NETWORK = "azure.mgmt.network.NetworkManagementClient"
RESOURCES = "azure.mgmt.resource.resources.ResourceManagementClient"
SIGN_IN_HINT = (" (sign in: `az login`, AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, "
                "or a managed identity)")


def error_code(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code:
        return str(code)
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
        if isinstance(body, dict):
            return str((body.get("error") or {}).get("code") or "")
    except Exception:  # noqa: BLE001 - best effort only
        pass
    return ""


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)


def short(exc: BaseException) -> str:
    code = error_code(exc)
    text = str(getattr(getattr(exc, "error", None), "message", "") or exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    return f"{code}: {message}" if code and code not in message else message


def is_sdk_error(exc: BaseException) -> bool:
    return (type(exc).__module__ or "").startswith("azure.")


def translate(exc: BaseException, what: str) -> CloudError:
    """An azure-core exception (HttpResponseError and its kin), after the SDK's retries, as a CloudError."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError
    code, status = error_code(exc), _status(exc)
    hint = SIGN_IN_HINT if type(exc).__name__ == "ClientAuthenticationError" else ""
    transient = (isinstance(exc, (ServiceRequestError, ServiceResponseError)) or code in TRANSIENT_CODES
                 or (status is not None and (status == 429 or status >= 500)))
    return CloudError(f"azure: {what} failed: {short(exc)}{hint}", code=code, status=status,
                      not_found=status == 404 or type(exc).__name__ == "ResourceNotFoundError",
                      capacity=code in CAPACITY_CODES, transient=transient)


def reported(error_class=CloudError):
    """What escapes a public method is one pipeline error: an SDK exception translated and named
    after the method, a CloudError of publish/promote/revoke as a PublishError."""
    def wrap(method):
        @functools.wraps(method)
        def inner(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except CloudError as exc:
                if error_class is CloudError:
                    raise
                raise error_class(str(exc)) from exc
            except PipelineError:
                raise
            except Exception as exc:  # noqa: BLE001 - only the SDK's own are translated
                if not is_sdk_error(exc):
                    raise
                err = translate(exc, method.__name__.strip("_").replace("_", " "))
                raise (err if error_class is CloudError else error_class(str(err))) from exc
        return inner
    return wrap


def parse_time(value: str) -> dt.datetime | None:
    """Packer's build_time (unix seconds), the YYYYMMDDhhmmss build tag, or ISO 8601."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        if value.isdigit() and len(value) == 14:
            return dt.datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
        if value.isdigit() and len(value) == 12:
            return dt.datetime.strptime(value, "%Y%m%d%H%M").replace(tzinfo=dt.timezone.utc)
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return dt.datetime.fromtimestamp(float(value), dt.timezone.utc)
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    except (ValueError, OverflowError):
        return None


class Calls:
    """The adapter's plumbing (a mixin of clouds.azure.Adapter)."""
    # Bounds (seconds); tests shrink them.
    vm_timeout_s = 1800.0
    delete_timeout_s = 1800.0
    replication_timeout_s = 4 * 3600.0
    progress_every_s = 60.0
    attempts = 5                 # starts of an operation that keeps ending Failed with a transient code

    @property
    def compute(self):
        if self._compute is None:
            self._compute = clients.azure(COMPUTE, self.subscription)
        return self._compute

    @property
    def network(self):
        if self._network is None:
            self._network = clients.azure(NETWORK, self.subscription)
        return self._network

    @property
    def resources(self):
        if self._resources is None:
            self._resources = clients.azure(RESOURCES, self.subscription)
        return self._resources

    def _sdk(self, what: str, call: Callable):
        """call(), its SDK errors as CloudErrors (the SDK has retried what it could)."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - only the SDK's own are translated
            if is_sdk_error(exc):
                raise translate(exc, what) from exc
            raise

    def _get_or_none(self, call: Callable, what: str = "read"):
        try:
            return self._sdk(what, call)
        except CloudError as exc:
            if exc.not_found:
                return None
            raise

    def _list(self, what: str, lister: Callable) -> list:
        """A list in the manifest's resource group; a group that does not exist yet (a new subscription's
        first bake asks before build_session creates it) holds nothing: ARM answers 404 ResourceGroupNotFound."""
        found = self._get_or_none(lambda: list(lister()), what)
        return [] if found is None else found

    def _wait(self, poller, what: str, timeout_s: float):
        """Wait for a long-running operation, bounded, with a progress line now and then."""
        start = time.monotonic()
        last = start
        while not poller.done():
            cancel.check(what)
            now = time.monotonic()
            if now - start > timeout_s:
                raise CloudError(f"azure: {what} did not finish within {timeout_s:.0f}s")
            if now - last >= self.progress_every_s:
                self.log(f"azure: {what}: still running ({now - start:.0f}s, status {poller.status()})")
                last = now
            poller.wait(max(0.05, min(5.0, self.progress_every_s, timeout_s - (now - start))))
        return poller.result()

    def _lro(self, what: str, begin: Callable, timeout_s: float | None = None):
        """Start a long-running operation and wait for it. One that ARM accepted and that ended Failed
        with a transient code is started again (bounded); every other error is final."""
        for attempt in range(1, self.attempts + 1):
            cancel.check(what)              # a cancelled bake starts nothing new (cleanup is shielded)
            try:
                return self._sdk(what, lambda: self._wait(begin(), what, timeout_s or self.vm_timeout_s))
            except CloudError as exc:
                ended_failed = exc.status is not None and exc.status < 400     # the poll's own 200
                if not (exc.transient and ended_failed) or attempt == self.attempts:
                    raise
                delay = min(60.0, clients.poll_interval(2.0) * 2 ** (attempt - 1))
                self.log(f"azure: {what}: the operation ended {exc.code}; starting it again "
                         f"({attempt}/{self.attempts - 1}) in {delay:.0f}s")
                cancel.sleep(delay)

    def _rg_path(self, rg: str | None = None) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{rg or self.rg}"
