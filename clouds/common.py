"""What every cloud adapter does the same way, written once: the expiry stamp on what a bake
creates and the staleness test `sweep` applies to it, the refusal of SSH from the whole internet,
channel tags, the test-VM launch that deletes what it created when it fails, and the loop over
placements when the cloud has no capacity.

The adapters' SDK translators turn SDK exceptions into core.errors.CloudError with `code`,
`status`, `not_found`, `capacity` and `transient` set: that is what the code here reads.
"""
from __future__ import annotations

import ipaddress
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Iterator, TypeVar

from core import cancel
from core.errors import CloudError, PipelineError
from core.names import TAG_CHANNEL_PREFIX

# A build or test resource outlives its bake by at most this long: `sweep` deletes it afterwards.
TEST_TTL = timedelta(hours=6)
STAMP_FORMAT = "%Y%m%d%H%M"            # TAG_EXPIRES: UTC, minutes; the GCE label rules allow it

Option = TypeVar("Option")
Result = TypeVar("Result")


# --- expiry ------------------------------------------------------------------------------------

def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime(STAMP_FORMAT)


def expiry(ttl: timedelta = TEST_TTL, now: datetime | None = None) -> str:
    """The TAG_EXPIRES value for something created now: `ttl` from now, or CLARA_EXPIRES_BY when that
    comes first. CI sets it to the job's deadline: a job GitHub cancels cannot finish its teardown,
    and its own sweep after the bake (`if: always()`) then finds what it left already expired."""
    from core import settings
    by = settings.value("CLARA_EXPIRES_BY")
    if by is not None and not _a_stamp(by):
        raise PipelineError(f"CLARA_EXPIRES_BY={by!r}: expected a UTC time as YYYYMMDDhhmm, like 202612071517")
    own = stamp((now or utcnow()) + ttl)
    return min(own, by) if by else own


def _a_stamp(text: str) -> bool:
    try:
        return len(text) == 12 and text.isdigit() and bool(datetime.strptime(text, "%Y%m%d%H%M"))
    except ValueError:                  # 12 digits, yet no time (a 77th minute)
        return False


def stale(expires: str, created: datetime | None, now: datetime, older_than_s: float) -> bool:
    """What `sweep` deletes: past its expiry stamp, or created more than older_than_s ago."""
    if expires and expires < stamp(now):
        return True
    return created is not None and created < now - timedelta(seconds=older_than_s)


# --- the runner's address ---------------------------------------------------------------------------

def runner_network(cidr: str, who: str):
    """The one network SSH to a build or test VM is opened to: a CIDR, never /0."""
    try:
        network = ipaddress.ip_network(str(cidr).strip(), strict=False)
    except ValueError:
        raise CloudError(f"{who}: {cidr!r} is not a CIDR like 203.0.113.7/32") from None
    if network.prefixlen == 0:
        raise CloudError(f"{who}: refusing to open SSH to {cidr}, the whole internet: give the runner's own address")
    return network


# --- channels -------------------------------------------------------------------------------------

def channel_tag(channel: str) -> str:
    return f"{TAG_CHANNEL_PREFIX}{channel}"


def channels(tags: dict[str, str]) -> tuple[str, ...]:
    """The channels a resource's tags (or labels) put it in, sorted."""
    return tuple(sorted(k[len(TAG_CHANNEL_PREFIX):] for k, v in (tags or {}).items()
                        if k.startswith(TAG_CHANNEL_PREFIX) and v == "true"))


def without_channels(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in (tags or {}).items() if not k.startswith(TAG_CHANNEL_PREFIX)}


# --- launching a test VM ------------------------------------------------------------------------------

@contextmanager
def rolled_back_on_failure(cloud: str, log: Callable[[str], None], delete: Callable[[list[str]], None],
                           what: str = "the test VM") -> Iterator[list[str]]:
    """Yields the list a launch records what it creates in (before each create call, so an
    interrupted wait still finds it). On any failure or interrupt, everything in it is deleted,
    to the end even in a cancelled bake, and the error goes on: pipeline errors and interrupts as
    they are, anything else as a CloudError (one paragraph, never a traceback). `what` names what
    was launched in that error (a test VM, or a team member's VM)."""
    created: list[str] = []
    try:
        yield created
    except BaseException as exc:
        if created:
            log(f"{cloud}: launch failed ({_first_line(exc)}); deleting the {len(created)} resource(s) it created")
            try:
                with cancel.shielded():
                    delete(list(created))
            except Exception as cleanup:  # noqa: BLE001 - the launch's own error is the one raised
                log(f"{cloud}: cleanup after the failed launch also failed: {cleanup}")
        if isinstance(exc, PipelineError) or not isinstance(exc, Exception):
            raise
        raise CloudError(f"{cloud}: launching {what} failed: {type(exc).__name__}: {exc}") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# --- capacity ---------------------------------------------------------------------------------------

def first_with_capacity(options: Iterable[Option], attempt: Callable[[Option], Result], *, cloud: str,
                        log: Callable[[str], None], where: str, advice: str,
                        label: Callable[[Option], str] = str,
                        refused: Callable[[Option], None] | None = None) -> tuple[Option, Result]:
    """attempt(option) for each option in turn (instance types, zones, sizes) until the cloud
    does not refuse it for want of capacity; `refused(option)` cleans up after a refusal. Any other
    error ends the loop. When every option was refused: a CloudError naming them all."""
    tried: list[str] = []
    for option in options:
        try:
            return option, attempt(option)
        except CloudError as exc:
            if not exc.capacity:
                raise
            tried.append(f"{label(option)} ({exc.code or 'no capacity'})")
            log(f"{cloud}: no capacity for {label(option)} ({exc.code or exc}); trying the next option")
            if refused is not None:
                refused(option)
    raise CloudError(f"{cloud}: no GPU capacity {where}: tried {', '.join(tried)}; {advice}", capacity=True)


def build_fallbacks(adapter) -> list[dict[str, str]]:
    """The placements Packer builds with in turn when the cloud has no capacity: the adapter's own
    fallbacks (sizes, zones) only when the build VM carries a GPU. A CPU build size (#28) waits on
    no GPU capacity; the test VM, the only GPU of such a bake, still tries every fallback."""
    section = adapter.manifest.clouds.section(adapter.name)
    if section is None or section.build_gpu() is None:
        return []
    return adapter.build_fallbacks()
