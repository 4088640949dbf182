"""moon's Packer source: Packer's built-in null builder on an existing host (what a target module defines)."""
from __future__ import annotations

from packer.hcl import Block

NAME = "moon"
ORDER = 5
BUILDER = "null"
PLUGIN = ("null", "github.com/hashicorp/null", ">= 1.0.0")


def source(manifest, names) -> Block:
    src = Block("source", (BUILDER, "clara"))
    src.set("ssh_host", manifest.clouds.moon.host)
    src.set("ssh_username", manifest.clouds.moon.ssh_username)
    return src


def variables(manifest) -> list:
    return []


def provision_overrides(manifest) -> dict:
    return {"docker": {"nvidia_toolkit": None}, "launcher": {"gpus": None}}


def uploads(manifest) -> list:
    return []


def plan(manifest) -> dict:
    return {"host": manifest.clouds.moon.host}
