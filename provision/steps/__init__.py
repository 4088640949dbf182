"""The steps, in the order they run. Each module has NAME and run(ctx) -> report.Result."""
from . import (compose, data_root, docker_engine, driver_check, fabric_manager, generalize, host_driver_image, hydrate,
               inventory, launcher, nvidia_runtime, pull, registry_login, umask)

# driver_check first: a base image with the wrong driver fails in minutes, before anything is installed.
# fabric_manager right after the driver it must match (NVSwitch sizes only).
ORDER = (driver_check, fabric_manager, umask, docker_engine, nvidia_runtime, data_root, compose, registry_login, pull,
         host_driver_image, launcher, hydrate, inventory, generalize)
NAMES = tuple(step.NAME for step in ORDER)
