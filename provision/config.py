"""Load and check provision.json (docs/CONTRACTS.md). Bad config: ConfigError naming file and key."""
import json
import os

SCHEMA = 1
# key path -> allowed types (None allowed where listed)
_REQUIRED = {
    ("schema",): (int,), ("cloud",): (str,), ("fingerprint",): (str,), ("umask",): (str,),
    ("docker", "install_if_missing"): (bool,), ("docker", "packages"): (list,),
    ("docker", "data_root"): (str,), ("docker", "nvidia_runtime", "path"): (str,),
    ("docker", "nvidia_runtime", "default"): (bool,), ("docker", "max_concurrent_downloads"): (int,),
    ("docker", "log", "max_size"): (str,), ("docker", "log", "max_file"): (int,),
    ("docker", "insecure_registries"): (list,),
    ("compose", "version"): (str,), ("compose", "sha256"): (str, type(None)),
    ("compose", "url"): (str, type(None)), ("compose", "file"): (str, type(None)),
    ("registry_login",): (dict, type(None)), ("images",): (list,),
    ("pull", "retries"): (int,), ("pull", "backoff_seconds"): (int, float),
    ("launcher", "image"): (str,), ("launcher", "jupyter_port"): (int,), ("launcher", "aiaa_port"): (int,),
    ("launcher", "container_jupyter_port"): (int,), ("launcher", "container_aiaa_port"): (int,),
    ("launcher", "gpus"): (str, type(None)), ("launcher", "workspace"): (str,),
    ("generalize", "azure_deprovision"): (bool,), ("generalize", "build_user"): (str, type(None)),
}


class ConfigError(Exception):
    pass


class Config:
    """The checked config; `.data` is the parsed JSON, `.dir` the folder it came from."""

    def __init__(self, data, path):
        self.data = data
        self.path = os.path.abspath(path)
        self.dir = os.path.dirname(self.path)

    def __getitem__(self, key):
        return self.data[key]


def _get(data, path):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            raise KeyError(key)
        data = data[key]
    return data


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ConfigError("{}: cannot be read: {}".format(path, exc.strerror or exc))
    except ValueError as exc:
        raise ConfigError("{}: is not valid JSON: {}".format(path, exc))
    if not isinstance(data, dict):
        raise ConfigError("{}: the top level must be a JSON object".format(path))
    for key_path, types in sorted(_REQUIRED.items()):
        name = ".".join(key_path)
        try:
            value = _get(data, key_path)
        except KeyError:
            raise ConfigError("{}: {}: is required but missing".format(path, name))
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError("{}: {}: expected {}, got {!r}".format(
                path, name, " or ".join(t.__name__ for t in types), value))
    if data["schema"] != SCHEMA:
        raise ConfigError("{}: schema: expected {}, got {!r}".format(path, SCHEMA, data["schema"]))
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("ref"), str):
            raise ConfigError("{}: images[{}].ref: expected a string".format(path, i))
    login = data["registry_login"]
    if login is not None:
        for key in ("registry", "username", "password_env"):
            if not isinstance(login.get(key), str):
                raise ConfigError("{}: registry_login.{}: expected a string".format(path, key))
    if not (data["compose"]["file"] or data["compose"]["url"]):
        raise ConfigError("{}: compose: give `file` or `url`".format(path))
    return Config(data, path)
