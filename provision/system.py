"""Commands on the running system; steps call these only when Root.running is true."""
import subprocess
import time

from .report import StepError


def run(cmd, input_text=None, check=True, timeout=600, env=None):
    try:
        proc = subprocess.run(cmd, input=input_text, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise StepError("{} is not installed".format(cmd[0]))
    except subprocess.TimeoutExpired:
        raise StepError("`{}` did not finish within {} s".format(" ".join(cmd[:3]), timeout))
    if check and proc.returncode != 0:
        raise StepError("`{}` failed (exit {}): {}".format(
            " ".join(cmd[:4]), proc.returncode, (proc.stderr or proc.stdout).strip()[-400:]))
    return proc


def restart_docker(timeout=90):
    run(["systemctl", "restart", "docker"])
    deadline = time.time() + timeout
    while time.time() < deadline:
        if run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False).returncode == 0:
            return
        time.sleep(1)
    raise StepError("docker did not come back within {} s after a restart".format(timeout))
