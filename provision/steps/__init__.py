"""The steps, in the order they run. Each module has NAME and run(ctx) -> report.Result."""
from . import (compose, data_root, docker_engine, driver_check, fabric_manager, generalize, host_driver_image, hydrate,
               inventory, launcher, nvidia_runtime, pull, registry_login, sbom_collect, security_updates, umask)

# driver_check first: a base image with the wrong driver fails in minutes, before anything is installed.
# security_updates next: the distribution's -security upgrades, before anything is installed on top of them.
# fabric_manager right after the driver it must match (NVSwitch sizes only).
# sbom_collect after everything is installed and pulled, before generalize removes what it must not see.
ORDER = (driver_check, security_updates, fabric_manager, umask, docker_engine, nvidia_runtime, data_root, compose,
         registry_login, pull, host_driver_image, launcher, hydrate, inventory, sbom_collect, generalize)
NAMES = tuple(step.NAME for step in ORDER)
