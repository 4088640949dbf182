"""Commands on the running system. Steps call these only when the target root is "/"."""
import os
import subprocess
import time

from .report import StepError

# docker login/pull/logout all use one client config, whatever HOME `sudo -E` kept, and it lives
# in /run (tmpfs): the credential never touches the disk, so not even the free blocks of the
# image can hold it after the file is removed.
DOCKER_CONFIG_DIR = "/run/clara-docker"


def is_running_system(root_path):
    """True when `root_path` is this machine's own root: services, docker and apt are ours to drive."""
    return os.path.realpath(root_path) == "/"


def docker_env():
    return dict(os.environ, DOCKER_CONFIG=DOCKER_CONFIG_DIR)


def run(cmd, input_text=None, check=True, timeout=600, env=None):
    """Run without a shell; StepError (never a traceback) when missing, too slow or failing."""
    try:
        proc = subprocess.run(cmd, input=input_text, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise StepError("{} is not installed".format(cmd[0]))
    except PermissionError:
        raise StepError("{} is not executable".format(cmd[0]))
    except subprocess.TimeoutExpired:
        raise StepError("`{}` did not finish within {} s".format(" ".join(cmd[:3]), timeout))
    if check and proc.returncode != 0:
        raise StepError("`{}` failed (exit {}): {}".format(
            " ".join(cmd[:4]), proc.returncode, (proc.stderr or proc.stdout).strip()[-400:]))
    return proc


def output(cmd, timeout=60):
    """stdout of a read-only query, or None when the tool is missing or fails."""
    try:
        proc = run(cmd, check=False, timeout=timeout)
    except StepError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def wait_for_docker(timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False).returncode == 0:
            return
        time.sleep(1)
    raise StepError("docker did not answer within {} s".format(timeout))


def restart_docker(timeout=90):
    run(["systemctl", "restart", "docker"], timeout=timeout)
    wait_for_docker(timeout)
