"""Errors the pipeline reports to users as one paragraph (never a traceback)."""
from __future__ import annotations


class PipelineError(Exception):
    """Base: str() is the whole message; `log` points at the file with the details."""

    def __init__(self, message: str, *, log: str | None = None):
        self.log = log
        super().__init__(message + (f" (details: {log})" if log else ""))


class PrerequisiteError(PipelineError):
    """A tool or Python extra is missing; the message says how to install it."""


class RenderError(PipelineError):
    """What the render would write breaks the contract with the guest (provision/)."""


class PackerError(PipelineError):
    """Packer failed or was interrupted."""


class ValidationFailed(PipelineError):
    """The test VM's checks failed; nothing is published."""


class CloudError(PipelineError):
    """A cloud API call failed after the SDK's retries. Each adapter's translator sets what the
    shared code asks: the thing is gone, the cloud has no capacity, a later try may succeed.
    `code` is the cloud's own error code, `status` the HTTP status, when there was one."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None, not_found: bool = False,
                 capacity: bool = False, transient: bool = False, log: str | None = None):
        super().__init__(message, log=log)
        self.code, self.status = code, status
        self.not_found, self.capacity, self.transient = not_found, capacity, transient


class AdapterError(PipelineError):
    """A target has no adapter, or its adapter lacks a method every adapter must define."""


class RecordError(PipelineError):
    """The published record cannot be read; the file is left as it is for a person to mend."""


class PublishError(PipelineError):
    """Publishing did not complete; the record and channels are unchanged."""


class Interrupted(PipelineError):
    """Ctrl-C or SIGTERM: everything the run started was stopped and removed."""
