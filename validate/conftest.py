"""pytest-testinfra setup for the image checks.

    pytest validate --hosts=paramiko://USER@127.0.0.1:PORT --ssh-identity-file=KEY \
        --expect=expect.json [--metrics=metrics.json] [--junitxml=report.xml]

Options: ``--expect`` (required, expect.json as in docs/CONTRACTS.md), ``--metrics`` (JSON file
that receives ``time_to_ready_s`` from the service smoke test and the ready stamps
``docker_ready_at``, ``gpu_step_at``, ``service_ready_at`` as runner-clock epoch seconds).
Markers: ``gpu`` (needs a GPU; skipped with expect's reason when none is expected and none is
found, failed when one is expected and none is found), ``service`` (starts the Clara container).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from validate import checks
from validate.remote import Remote, explain

HERE = Path(__file__).resolve().parent
EXPECT_KEY = pytest.StashKey[object]()


def pytest_addoption(parser):
    group = parser.getgroup("clara-validate", "Clara image validation")
    group.addoption("--expect", metavar="FILE", default=None,
                    help="expect.json written by the pipeline (required to run validate/)")
    group.addoption("--metrics", metavar="FILE", default=None,
                    help="write measured metrics (time_to_ready_s) to this JSON file")


def pytest_configure(config):
    known = {str(m).split(":", 1)[0].strip() for m in config.getini("markers")}
    for name, text in (("gpu", "needs an NVIDIA GPU on the target"),
                       ("service", "starts the Clara container and probes its ports")):
        if name not in known:  # pyproject.toml may already declare them
            config.addinivalue_line("markers", f"{name}: {text}")
    opt = config.option
    if getattr(opt, "help", False) or getattr(opt, "version", False) \
            or getattr(opt, "markers", False) or not _targets_this_dir(config):
        return
    try:
        config.stash[EXPECT_KEY] = checks.load_expect(config.getoption("expect", None))
    except checks.ExpectError as exc:
        raise pytest.UsageError(str(exc)) from None


def _targets_this_dir(config) -> bool:
    """True when the command line names validate/ or something in it."""
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        p = (base / str(arg).split("::", 1)[0]).resolve()
        if p == HERE or HERE in p.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    # Reached from a wider run (e.g. `pytest` at the repository root) without --expect: the
    # image checks need a target and an expect file, so they are left out rather than erroring.
    p = Path(collection_path).resolve()
    if (p == HERE or HERE in p.parents) and EXPECT_KEY not in config.stash:
        return True
    return None


def pytest_generate_tests(metafunc):
    if "expected_image" in metafunc.fixturenames:
        images = list(metafunc.config.stash[EXPECT_KEY].get("images") or ())
        metafunc.parametrize("expected_image", images,
                             ids=[str(i.get("ref")) for i in images] or None)


def pytest_collection_modifyitems(config, items):
    # test_ready (Docker answers, first GPU step) runs first, then the service smoke test, so
    # neither the ready stamps nor time_to_ready_s (VM boot -> ports answering) are inflated by
    # the duration of the other checks. Stable: the rest keep their order.
    def rank(item):
        if item.module.__name__.endswith("test_ready"):
            return 0
        return 1 if item.get_closest_marker("service") else 2
    items.sort(key=rank)


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def expect(pytestconfig):
    """expect.json as a read-only mapping (mappingproxy / tuples all the way down)."""
    return pytestconfig.stash[EXPECT_KEY]


@pytest.fixture(scope="module")
def remote(host):
    return Remote.of(host)


@dataclasses.dataclass(frozen=True)
class Gpu:
    present: bool
    expected: bool
    listing: str
    error: str
    model: str | None
    count: int | None

    @property
    def missing_but_expected(self) -> bool:
        return self.expected and not self.present

    def failure(self) -> str:
        return (f"the manifest expects {self.count or 'a'} x {self.model or 'GPU'} but this host "
                f"has no usable GPU: {self.error}")


@pytest.fixture(scope="module")
def gpu_info(host, expect) -> Gpu:
    """Whether the host has a GPU (``nvidia-smi -L`` works and lists one) and what expect says."""
    spec = expect.get("gpu") or {}
    r = host.run("nvidia-smi -L")
    present = r.rc == 0 and "GPU" in r.stdout
    return Gpu(present=present, expected=bool(spec.get("expected", False)),
               listing=r.stdout.strip(), error="" if present else explain(r),
               model=spec.get("model"), count=spec.get("count"))


@pytest.fixture
def gpu(gpu_info, expect) -> Gpu:
    """For GPU checks: skip with expect's reason when no GPU is expected and none is found.

    When a GPU is expected and none is found the test is *failed* in its call phase (see
    ``pytest_pyfunc_call``), so the report says FAILED rather than skipped or errored.
    """
    if not gpu_info.present and not gpu_info.expected:
        spec = expect.get("gpu") or {}
        pytest.skip(spec.get("reason_if_absent") or "no GPU expected on this target")
    return gpu_info


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    g = pyfuncitem.funcargs.get("gpu")
    if isinstance(g, Gpu) and g.missing_but_expected:
        pytest.fail(g.failure(), pytrace=False)
    try:
        return (yield)
    except checks.CheckError as exc:  # unparsable output/file: a failed check, said plainly
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def service_spec(expect):
    spec = expect.get("service") or {}
    if not spec.get("enabled"):
        pytest.skip("service smoke test disabled (expect.service.enabled is false)")
    return spec


@pytest.fixture(scope="session")
def metrics_path(pytestconfig):
    return pytestconfig.getoption("metrics")
