"""The steps, in the order they run. Each module has NAME and run(ctx) -> report.Result."""
from . import (compose, data_root, docker_engine, generalize, hydrate, inventory, launcher, nvidia_runtime,
               pull, registry_login, umask)

ORDER = (umask, docker_engine, nvidia_runtime, data_root, compose, registry_login, pull, launcher, hydrate,
         inventory, generalize)
NAMES = tuple(step.NAME for step in ORDER)
