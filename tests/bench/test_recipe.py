"""bench/recipe.py's pure logic: the figures' shape, medians and ratios, the busy-machine guard.
No VM, no Packer: the benchmark itself runs only from `invoke bench` (minutes under TCG)."""
from __future__ import annotations

import pytest

from bench import recipe


def _recipe(total: float, base: float = 150.0) -> dict[str, float]:
    return {"base": base, "render": 0.1, "prepare": 2.0, "build": 130.0, "test": 40.0, "total": total}


def _bake(total: float, resolve: float = 151.0) -> dict[str, float]:
    return {"resolve": resolve, "render": 0.1, "build": 131.0, "test": 100.0, "publish": 0.0,
            "outside_stages": 5.0, "total": total}


def test_figures_give_medians_per_stage_and_the_ratio_of_totals():
    out = recipe.figures([_recipe(320.0), _recipe(330.0), _recipe(400.0)],
                         [_bake(390.0), _bake(380.0), _bake(500.0)], cold=True, accelerator="tcg")
    assert out["recipe_s"]["total"] == 330.0 and out["bake_s"]["total"] == 390.0
    assert out["ratio"] == round(390.0 / 330.0, 2) and out["goal"] == 1.2 and out["goal_met"] is True
    assert out["runs"] == 3 and out["cold"] is True and out["accelerator"] == "tcg"
    assert set(out["recipe_s"]) == {"base", "render", "prepare", "build", "test", "total"}
    assert "outside_stages" in out["bake_s"]


def test_ratio_after_base_leaves_each_sides_base_image_out():
    out = recipe.figures([_recipe(300.0, base=150.0)], [_bake(400.0, resolve=160.0)], cold=True, accelerator="tcg")
    assert out["ratio_after_base"] == round((400.0 - 160.0) / (300.0 - 150.0), 2)
    assert out["ratio"] == 1.33 and out["goal_met"] is False


def test_figures_refuse_unpaired_runs():
    with pytest.raises(ValueError, match="as many bake runs"):
        recipe.figures([_recipe(300.0)], [], cold=False, accelerator="tcg")
    with pytest.raises(ValueError, match="no ratio"):
        recipe.ratio(10.0, 0.0)


def test_a_stage_missing_from_one_run_is_left_out_of_its_median():
    assert recipe.medians([{"a": 1.0, "b": 5.0}, {"a": 3.0}]) == {"a": 2.0, "b": 5.0}


def test_bake_stages_adds_what_is_outside_them_and_the_wall_clock():
    stages = recipe.bake_stages({"stages": {"resolve": 0.3, "build": 130.0, "test": 100.0}}, wall_s=240.04)
    assert stages == {"resolve": 0.3, "build": 130.0, "test": 100.0, "outside_stages": 9.7, "total": 240.0}


def test_stage_times_only_what_succeeded():
    times: dict[str, float] = {}
    with recipe.stage(times, "ok"):
        pass
    with pytest.raises(RuntimeError):
        with recipe.stage(times, "broken"):
            raise RuntimeError("boom")
    assert list(times) == ["ok"] and times["ok"] >= 0.0


def test_others_running_names_vms_registries_and_packer(tmp_path):
    for pid, comm in (("101", "qemu-system-x86"), ("102", "bash"), ("103", "docker-registry"), ("104", "packer")):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "comm").write_text(comm + "\n")
    assert sorted(recipe.others_running(tmp_path)) == ["101 qemu-system-x86", "103 docker-registry", "104 packer"]
    assert recipe.others_running(tmp_path / "empty") == []


def _proc(root, pid: int, ppid: int, comm: str, cmd: str) -> None:
    d = root / str(pid)
    d.mkdir()
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0 -1\n")
    (d / "cmdline").write_bytes(cmd.replace(" ", "\0").encode() + b"\0")


def test_foreign_leaves_out_the_benchmarks_own_tree(tmp_path):
    _proc(tmp_path, 8, 1, "python3", "python3 -m invoke bench --out b.json")  # what started it
    _proc(tmp_path, 9, 8, "sh", "/bin/sh -c python3 -m bench --out b.json")
    _proc(tmp_path, 10, 9, "python3", "python3 -m bench --out b.json")     # the benchmark
    _proc(tmp_path, 11, 10, "python3", "python3 -m invoke bake --cloud local")
    _proc(tmp_path, 12, 11, "qemu-system-x86", "qemu-system-x86_64 -accel tcg")
    _proc(tmp_path, 20, 1, "python3", "python3 -m pytest -q tests")        # someone else's
    _proc(tmp_path, 21, 20, "qemu-system-x86", "qemu-system-x86_64 -m 2048")
    _proc(tmp_path, 30, 1, "odd ) name", "vim notes")                       # not disturbing
    table = recipe.process_table(tmp_path)
    assert table[30] == (1, "vim notes") and table[12] == (11, "qemu-system-x86_64 -accel tcg")
    assert recipe.foreign(table, me=10) == ["20 python3 -m pytest -q tests", "21 qemu-system-x86_64 -m 2048"]
