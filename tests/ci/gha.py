"""A small stand-in for the GitHub Actions runner's step scheduling, enough to ask "which steps of
this job run when step X fails, or the job is cancelled?" of .github/workflows/rebuild.yml.

What it follows (GitHub Docs, "Evaluate expressions in workflows and actions", status check
functions; "Workflow cancellation reference"):
- a step without `if:` runs as `if: success()`; `${{ }}` around an `if:` is optional;
- success(): no previous step failed and the job is not cancelled; failure(): a previous step
  failed; always(): true, even when cancelled; cancelled(): the job was cancelled;
- when a job is cancelled (by hand or by its timeout) the running step is stopped, then the `if:`
  of every later step is evaluated again: only those that are still true run.
The expression language covered: the four functions, `!`, `&&`, `||`, parentheses, `==`/`!=`
between a context path (matrix.cloud, needs.clouds.result, inputs.x) and a '...' string.
"""
from __future__ import annotations

import re

TOKEN = re.compile(r"\s*(\(\)|&&|\|\||==|!=|!|\(|\)|'[^']*'|[A-Za-z_][\w.-]*)")


def tokens(expr: str) -> list[str]:
    expr = expr.strip()
    if expr.startswith("${{") and expr.endswith("}}"):
        expr = expr[3:-2]
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read {expr[pos:]!r} in {expr!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


class Expr:
    def __init__(self, expr: str, status: dict, contexts: dict):
        self.t, self.i, self.status, self.contexts = tokens(expr), 0, status, contexts

    def value(self):
        v = self.either()
        if self.i != len(self.t):
            raise ValueError(f"unexpected {self.t[self.i]!r}")
        return v

    def take(self, tok=None):
        got = self.t[self.i] if self.i < len(self.t) else None
        if tok is not None and got != tok:
            raise ValueError(f"expected {tok!r}, got {got!r}")
        self.i += 1
        return got

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def either(self):
        v = self.both()
        while self.peek() == "||":
            self.take()
            right = self.both()
            v = v or right
        return v

    def both(self):
        v = self.compare()
        while self.peek() == "&&":
            self.take()
            right = self.compare()
            v = v and right
        return v

    def compare(self):
        v = self.unary()
        if self.peek() in ("==", "!="):
            op, right = self.take(), self.unary()
            return (v == right) if op == "==" else (v != right)
        return v

    def unary(self):
        if self.peek() == "!":
            self.take()
            return not self.unary()
        if self.peek() == "(":
            self.take()
            v = self.either()
            self.take(")")
            return v
        tok = self.take()
        if tok.startswith("'"):
            return tok[1:-1]
        if self.peek() == "()":
            self.take()
            return self.status[tok]()
        value = self.contexts
        for part in tok.split("."):
            value = value.get(part, "") if isinstance(value, dict) else ""
        return value


def evaluate(expr: str, *, failed: bool = False, cancelled: bool = False, contexts: dict | None = None) -> bool:
    status = {"always": lambda: True, "cancelled": lambda: cancelled,
              "success": lambda: not failed and not cancelled, "failure": lambda: failed}
    return bool(Expr(expr, status, contexts or {}).value())


def step_name(step: dict) -> str:
    return step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]


def run_job(steps: list[dict], outcomes: dict[str, str] | None = None, *, cancel_during: str | None = None,
            contexts: dict | None = None) -> dict[str, str]:
    """Each step's conclusion: success, failure, skipped or cancelled. `outcomes` names the steps that
    fail ("failure"); `cancel_during` the step running when the job is cancelled."""
    outcomes, failed, cancelled, seen = outcomes or {}, False, False, {}
    for step in steps:
        name = step_name(step)
        if not evaluate(str(step.get("if", "success()")), failed=failed, cancelled=cancelled, contexts=contexts):
            seen[name] = "skipped"
            continue
        if name == cancel_during:
            seen[name], cancelled = "cancelled", True
            continue
        seen[name] = outcomes.get(name, "success")
        if seen[name] == "failure" and not step.get("continue-on-error"):
            failed = True
    return seen
