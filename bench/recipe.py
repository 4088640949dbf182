"""Issue #14's goal "the local bake takes at most 1.2x a hand-run recipe of the same steps".

The recipe is what an engineer would type for the same golden image, with no pipeline logic (no
pre-flight doctor, no fingerprint or skip, no checks suite, no record or publish):
  base      the cached Debian base image: `clouds.local.baseimage.build_base_image`, which is only
            the mmdebstrap, sfdisk/mkfs.ext4/grub-mkimage and `qemu-img convert` commands;
  render    `packer.render.render` (the engineer needs the template too);
  prepare   an SSH key, docker compose, the base image's sha256, the local docker-registry on the
            manifest's port with the stand-in Clara image pushed (the very stand-in the bake pins:
            the stand-in is a fixture of the local target, not a recipe step, so it is not re-made);
  build     `packer build` of the rendered template, run directly, with the variables the
            adapter's build_session gives (the same pinned digest, so the provisioning does the
            same work);
  test      one boot of the image on a qcow2 overlay, SSH, `docker info` until it answers;
  poweroff  `systemctl poweroff` and QEMU's exit (the bake's teardown does not wait for a clean
            shutdown: it stops QEMU by its PID, so this stage is the recipe's alone).
The recipe's total is the sum of those stages; the accelerator is chosen untimed (the engineer
knows the machine: the "auto" KVM probe, where there is KVM, is the bake's own cost).
Against it: `python -m invoke bake --cloud local --force`, wall clock, its build and record folders
in a temporary folder (CLARA_BUILD_DIR, CLARA_RECORD_DIR) and its cache as the recipe's.

Cache state, the same for both sides:
- cold (default): each run, recipe and bake alike, starts from its own empty cache, so both make
  the base image with mmdebstrap from Debian's mirror and fetch compose from PyPI; the mirror's
  speed is noise both sides share, so `ratio_after_base` leaves the base image out too. Then
  WARM_RUNS warm pairs on the cache the cold bake filled (`bake_vs_recipe_warm`), so one
  `invoke bench` gives both figures;
- warm (`cache` given, or `quick`): both use that cache, its base image and compose made first,
  untimed.
Runs alternate, recipe first. The benchmark refuses to start beside another VM, registry or Packer,
and lists in `others_seen` any bake, VM or test suite not its own that it saw while it ran (this
machine is shared: such figures are doubtful). Everything started (registry, QEMU, Packer, the bake) is stopped on
any exit: the registry and QEMU by the adapter's own context managers, Packer and the bake with
SIGINT to their process group (a terminal's Ctrl-C), so they clean up, then SIGKILL.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from . import vm as vms
from .vm import run_to_end

GOAL = 1.2                      # the bake may take at most this times the recipe
RUNS = 1                        # of each, alternating; a pair takes about 8 min cold, 5 warm (TCG, 2 cores)
WARM_RUNS = 2                   # after the cold pair(s), on the cache the cold bake filled
DOCKER_WAIT = "for i in $(seq 1 300); do sudo -n docker info >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1"
OTHERS = ("qemu-system-x86", "docker-registry", "packer")     # /proc/*/comm (15 characters at most)
# Seen during the run outside our own process tree, these make the figures doubtful (the report says so).
DISTURBING = re.compile(r"qemu-system|docker-registry|packer|mmdebstrap|pytest|invoke")
WATCH_EVERY_S = 5.0


# --- figures (pure) ----------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per stage, the median over the runs (a stage missing from a run is left out of its median)."""
    names = list(dict.fromkeys(name for run in runs for name in run))
    return {name: _median([run[name] for run in runs if name in run]) for name in names}


def ratio(bake_s: float, recipe_s: float) -> float:
    if recipe_s <= 0:
        raise ValueError(f"the recipe took {recipe_s} s: no ratio can be made against it")
    return round(bake_s / recipe_s, 2)


def figures(recipe_runs: list[dict[str, float]], bake_runs: list[dict[str, float]], *, cold: bool,
            accelerator: str) -> dict:
    """The benchmark's answer from each side's runs ({stage: s, "total": s}, the bake's with "resolve")."""
    if not recipe_runs or len(recipe_runs) != len(bake_runs):
        raise ValueError(f"expected as many bake runs as recipe runs (at least one), got "
                         f"{len(recipe_runs)} and {len(bake_runs)}")
    recipe_s, bake_s = medians(recipe_runs), medians(bake_runs)
    out = {"recipe_s": recipe_s, "bake_s": bake_s, "runs": len(recipe_runs), "cold": cold,
           "accelerator": accelerator, "ratio": ratio(bake_s["total"], recipe_s["total"]), "goal": GOAL}
    out["goal_met"] = out["ratio"] <= GOAL
    # The bake's resolve holds its base image (and the stand-in, fingerprint): the rest of each side.
    after = [ratio(b["total"] - b.get("resolve", 0.0), r["total"] - r.get("base", 0.0))
             for r, b in zip(recipe_runs, bake_runs)]
    out["ratio_after_base"] = round(statistics.median(after), 2)
    return out


def bake_stages(summary: dict, wall_s: float) -> dict[str, float]:
    """The bake's own stage times, what is outside them (interpreter start, the doctor, the
    summary), and its wall clock as "total"."""
    stages = {name: float(s) for name, s in summary["stages"].items()}
    stages["outside_stages"] = round(wall_s - sum(stages.values()), 1)
    stages["total"] = round(wall_s, 1)
    return stages


@contextmanager
def stage(times: dict[str, float], name: str):
    """Time one step into `times[name]`, on success only (a failed run has no figure)."""
    start = time.perf_counter()
    yield
    times[name] = round(time.perf_counter() - start, 1)


# --- guards ------------------------------------------------------------------------------------
def others_running(proc: Path = Path("/proc")) -> list[str]:
    """"pid name" of every VM, registry or Packer on this machine: figures taken beside one are worthless."""
    found = []
    for comm in proc.glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue                       # the process ended meanwhile
        if name in OTHERS:
            found.append(f"{comm.parent.name} {name}")
    return found


def _refuse_if_busy() -> None:
    busy = others_running()
    if busy:
        raise RuntimeError("another bake or VM is running on this machine (" + ", ".join(busy) + "): its load "
                           "would make the figures worthless and it may hold the registry's port; run again "
                           "once it has finished")


def process_table(proc: Path = Path("/proc")) -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of every process that can be read."""
    table = {}
    for d in proc.glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue                       # the process ended meanwhile
        table[int(d.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)   # the name may hold ") "
    return table


def _chain(table: dict[int, tuple[int, str]], pid: int) -> list[int]:
    """`pid` and its parents up to init."""
    chain: list[int] = []
    while pid not in chain and pid > 1:
        chain.append(pid)
        pid = table.get(pid, (0, ""))[0]
    return chain


def foreign(table: dict[int, tuple[int, str]], me: int) -> list[str]:
    """"pid command" of the disturbing processes that are not `me`, started by it, or what started
    it (`invoke bench` runs the benchmark)."""
    ancestors = set(_chain(table, me))
    return [f"{pid} {cmd[:100]}" for pid, (_, cmd) in sorted(table.items())
            if DISTURBING.search(cmd) and pid not in ancestors and me not in _chain(table, pid)]


class Watch:
    """Samples the machine while the benchmark runs, for bakes, VMs or test suites that are not ours."""

    def __init__(self, every_s: float = WATCH_EVERY_S):
        self.every_s, self.seen = every_s, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="recipe-watch", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            for entry in foreign(process_table(), os.getpid()):
                self.seen.setdefault(entry, time.strftime("%H:%M:%S"))

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, limit: int = 20) -> list[str]:
        return [f"{at} {entry}" for entry, at in list(self.seen.items())[:limit]]


# --- processes ---------------------------------------------------------------------------------
@contextmanager
def _cache_env(cache: Path):
    """The adapter reads its cache from CLARA_CACHE_DIR when asked: point it at this run's cache."""
    old = os.environ.pop("CLARA_CACHE_DIR", None)        # kept to restore, not read as a setting
    os.environ["CLARA_CACHE_DIR"] = str(cache)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CLARA_CACHE_DIR", None)
        else:
            os.environ["CLARA_CACHE_DIR"] = old


# --- the recipe --------------------------------------------------------------------------------
def _base_spec(manifest):
    from clouds.local.baseimage import BaseImageSpec
    return BaseImageSpec.for_manifest(manifest.clouds.local)


def _packer_command(folder: Path, variables: dict[str, str]) -> list[list[str]]:
    """What the engineer types: Packer 1.6.6 builds the template alone; >= 1.7 needs `init` first."""
    from packer.build import packer_binary, packer_version, uses_plugins
    binary = packer_binary()
    args = [a for name, value in sorted(variables.items()) for a in ("-var", f"{name}={value}")]
    if uses_plugins(packer_version(binary)):
        return [[binary, "init", "."], [binary, "build", "-color=false", *args, "."]]
    return [[binary, "build", "-color=false", *args, "template.pkr.hcl"]]


def recipe(manifest, work: Path, cache: Path) -> tuple[dict[str, float], str]:
    """One hand-run recipe: ({stage: seconds, "total": seconds}, the accelerator it used)."""
    from clouds.local import baseimage, composefile, qemu, registry, standin
    from clouds.local.adapter import Adapter
    from core.names import TEST_USER
    from core.sshkey import ephemeral_keypair
    from packer.render import render

    local, times = manifest.clouds.local, {}
    work.mkdir(parents=True)
    with stage(times, "base"):
        base = baseimage.build_base_image(_base_spec(manifest), cache, log=lambda _: None)
    # Untimed: the engineer knows the machine's accelerator (auto's KVM probe is the bake's cost).
    accel = qemu.choose_accelerator(local.accelerator, image=base)
    with stage(times, "render"):
        folder = render(manifest, "local", work / "render").folder
    with ExitStack() as stack:
        with stage(times, "prepare"):
            key, pub = ephemeral_keypair(work / "keys")
            compose = composefile.fetch_compose(manifest.compose.version, cache)
            checksum = "sha256:" + composefile.sha256_file(base)
            adapter = Adapter(manifest, log=lambda _: None)
            with _cache_env(cache):
                digests = adapter.pinned_digests()
            stack.enter_context(registry.LocalRegistry(work / "registry", local.registry_port, work / "registry.log"))
            repo, _, tag = local.standin_image.rpartition(":")
            standin.push(adapter._standin, f"127.0.0.1:{local.registry_port}", repo, tag)
        output = work / "output"
        variables = {"base_image": str(base), "base_image_checksum": checksum, "output_directory": str(output),
                     "accelerator": accel, "ssh_private_key_file": str(key), "ssh_public_key_file": str(pub),
                     "serial_log": str(work / "build-serial.log"), "compose_file": str(compose.path),
                     "image_digests": json.dumps(digests, sort_keys=True)}
        env = {**os.environ, "PACKER_NO_COLOR": "1", "CHECKPOINT_DISABLE": "1"}
        from packer.build import packer_temp_parent
        parent, moved = packer_temp_parent()
        if moved:               # a long TMPDIR: Packer's plugin sockets would not fit (packer/build.py)
            env["TMPDIR"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="clara-pk-", dir=parent))
        with stage(times, "build"):
            for cmd in _packer_command(folder, variables):
                run_to_end(cmd, cwd=folder, env=env, log=work / "packer.log", what="packer " + cmd[1])
    golden = _golden(output)
    with ExitStack() as stack:                  # QEMU is stopped by its PID on any exit
        with stage(times, "test"):
            overlay = qemu.make_overlay(golden, work / "test.qcow2")
            vm = stack.enter_context(qemu.start_vm(
                overlay, accel=accel, memory_mb=local.memory_mb, cpus=local.cpus, pubkey_file=pub, private_key=key,
                serial_log=work / "test-serial.log", user=TEST_USER))
            vm.wait_for_ssh(manifest.validation.ssh_timeout_s)
            rc, _, err = vm.run(DOCKER_WAIT, timeout=400)
            if rc != 0:
                raise RuntimeError(f"docker never answered in the recipe's test VM (exit {rc}): {err.strip()[-300:]}")
        with stage(times, "poweroff"):
            vm.poweroff()
    times["total"] = round(sum(times.values()), 1)
    return times, accel


def _golden(output: Path) -> Path:
    found = sorted(output.glob("*.qcow2"))
    if len(found) != 1:
        raise RuntimeError(f"packer build finished but {output} holds {len(found)} qcow2 files, not one")
    return found[0]


# --- the bake ----------------------------------------------------------------------------------
def bake(work: Path, cache: Path) -> dict[str, float]:
    """`invoke bake --cloud local --force` in its own build and record folders: its stage times."""
    baked = vms.bake(work.parent, work.name, cache)
    return bake_stages({"stages": baked["stages_s"]}, baked["wall_s"])


# --- the benchmark -----------------------------------------------------------------------------
def _prime(manifest, cache: Path) -> None:
    """Warm: the base image and compose in the cache before either side is timed."""
    from clouds.local import baseimage, composefile
    baseimage.build_base_image(_base_spec(manifest), cache, log=lambda _: None)
    composefile.fetch_compose(manifest.compose.version, cache)


def _pairs(manifest, work: Path, cache: Path | None, runs: int) -> tuple[list[dict], list[dict], str]:
    """`runs` alternating pairs, recipe first; each side on `cache`, or on its own empty one (cold)."""
    recipes, bakes, accel = [], [], "?"
    if cache is not None:
        _prime(manifest, cache)
    for n in range(runs):
        times, accel = recipe(manifest, work / f"recipe-{n}", cache or work / f"recipe-{n}-cache")
        recipes.append(times)
        bakes.append(bake(work / f"bake-{n}", cache or work / f"bake-{n}-cache"))
    return recipes, bakes, accel


def run(quick: bool, cache: Path | None = None) -> dict:
    """Cold (empty caches), then warm on the cold bake's cache, unless `cache` is given or `quick`:
    then warm only, on `cache` (default: the local target's own cache)."""
    from core import settings
    from manifests import load_manifest

    _refuse_if_busy()
    manifest = load_manifest()
    cold = cache is None and not quick
    result = {}
    with tempfile.TemporaryDirectory(prefix="clara-bench-recipe-") as tmp_name, Watch() as watch:
        tmp = Path(tmp_name)
        if cold:
            recipes, bakes, accel = _pairs(manifest, tmp / "cold", None, RUNS)
            result["bake_vs_recipe"] = figures(recipes, bakes, cold=True, accelerator=accel)
            recipes, bakes, accel = _pairs(manifest, tmp / "warm", tmp / "cold" / "bake-0-cache", WARM_RUNS)
            result["bake_vs_recipe_warm"] = figures(recipes, bakes, cold=False, accelerator=accel)
        else:
            recipes, bakes, accel = _pairs(manifest, tmp, Path(cache or settings.cache_dir()), RUNS)
            result["bake_vs_recipe"] = figures(recipes, bakes, cold=False, accelerator=accel)
    for figure in result.values():
        figure["others_seen"] = watch.report()  # empty: nothing else ran beside the benchmark
    return result
