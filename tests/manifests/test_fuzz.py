"""Property-based: random and mutated manifests either load or fail with ManifestError, never
anything else (no traceback reaches a user)."""
from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from manifests import DEFAULT, ManifestError, load_manifest

BASE = yaml.safe_load(DEFAULT.read_text())
EXAMPLES = 400

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=40), st.sampled_from(["", "0002", "/mnt/docker", "p3.2xlarge",
                                                           "Standard_NC6s_v3", "${x}", "{{ y }}", "a\nb"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=10)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))


PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated(draw):
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS))
        parent = doc
        for key in path[:-1]:
            if not isinstance(parent, dict) or key not in parent:
                break
            parent = parent[key]
        else:
            if isinstance(parent, dict):
                action = draw(st.sampled_from(["replace", "delete", "typo"]))
                if action == "replace":
                    parent[path[-1]] = draw(values)
                elif action == "delete":
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1] + "x"] = parent.pop(path[-1], None)
    return doc


def _check(tmp_path_factory, doc_text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "m.yaml"
    path.write_text(doc_text)
    try:
        load_manifest(path)
    except ManifestError as exc:
        assert str(exc).startswith(str(path))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=mutated())
def test_mutated_manifests_load_or_fail_cleanly(tmp_path_factory, doc):
    _check(tmp_path_factory, yaml.safe_dump(doc))


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_random_text_loads_or_fails_cleanly(tmp_path_factory, text):
    _check(tmp_path_factory, text)
