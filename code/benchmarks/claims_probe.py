"""Runs inside a lesson's kernel for ``claims.py``: records every assert and every glued value.

Installed by the first cell ``claims.py`` adds to the notebook. Every ``assert`` the lesson
executes (in a cell or in a function a cell defines) is rewritten so that it records, for each of
its clauses (the parts of an ``and``), the values compared and the margin left, and then goes on
instead of raising: one run measures every claim of the lesson, not just those before the first
that fails. ``myst_nb.glue`` is wrapped to record the numbers and short strings the prose shows.
The records go, after every cell, to the JSON file named by ``$LLMFS_CLAIMS_LOG``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import operator
import os
from typing import Any

LOG_ENV = "LLMFS_CLAIMS_LOG"
HOOK = "__llmfs_claims__"

OPS = {ast.Lt: ("<", operator.lt), ast.LtE: ("<=", operator.le), ast.Gt: (">", operator.gt),
       ast.GtE: (">=", operator.ge), ast.Eq: ("==", operator.eq), ast.NotEq: ("!=", operator.ne),
       ast.In: ("in", lambda a, b: a in b), ast.NotIn: ("not in", lambda a, b: a not in b),
       ast.Is: ("is", operator.is_), ast.IsNot: ("is not", operator.is_not)}


def number(value: Any) -> float | None:
    """``value`` as a float when it is one number (int, float, numpy or one-element tensor)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        if hasattr(value, "numel") and value.numel() == 1:
            return float(value.item())
        if hasattr(value, "dtype") and getattr(value, "shape", None) == ():
            return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return None


def margin(op: str, left: float, right: float) -> float | None:
    """How far the comparison is from flipping: positive when it holds."""
    if op in ("<", "<="):
        return right - left
    if op in (">", ">="):
        return left - right
    if op == "==":
        return -abs(left - right)
    if op == "!=":
        return abs(left - right)
    return None


def short(value: Any) -> Any:
    as_number = number(value)
    if as_number is not None:
        return as_number if math.isfinite(as_number) else repr(as_number)
    if isinstance(value, bool | str) and len(str(value)) <= 80:
        return value
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # an array: its kind, not its values
        return f"<{type(value).__name__} {tuple(value.shape)} {value.dtype}>"
    text = (repr(value).splitlines() or [""])[0]
    return text if len(text) <= 80 else text[:77] + "..."


class Recorder:
    def __init__(self, path: str) -> None:
        self.path, self.cell, self.asserts, self.glued = path, "", {}, {}

    def pre_run_cell(self, info: Any) -> None:
        self.cell = hashlib.sha256(info.raw_cell.encode()).hexdigest()[:16]

    def record(self, line: int, source: str, clauses: list[tuple]) -> None:
        """One evaluation of an assert: ``clauses`` holds (text, op, thunks) for each clause."""
        key = f"{self.cell}:{line}"
        entry = self.asserts.setdefault(key, {"cell": self.cell, "line": line, "source": source,
                                              "evaluations": 0, "failures": 0, "clauses": {}})
        entry["evaluations"] += 1
        failed = False
        for text, op, thunks in clauses:
            clause = entry["clauses"].setdefault(text, {"op": op, "values": None, "margin": None,
                                                        "passed": True})
            try:
                values = [thunk() for thunk in thunks]
                if op is None:
                    ok = bool(values[0])
                    values = [values[0]]
                else:
                    pairs = zip(op, values, values[1:], strict=False)
                    ok = all(OPS_BY_NAME[o](a, b) for o, a, b in pairs)
                ok = bool(ok)
            except Exception as error:  # noqa: BLE001 - a clause that raises is a failed claim
                values, ok = [f"{type(error).__name__}: {error}"[:80]], False
            numbers = [number(v) for v in values]
            clause_margin = None
            if op is not None and all(n is not None for n in numbers) and len(numbers) > 1:
                pairs = zip(op, numbers, numbers[1:], strict=False)
                margins = [margin(o, a, b) for o, a, b in pairs]
                margins = [m for m in margins if m is not None]
                clause_margin = min(margins) if margins else None
            # Over repeated evaluations (an assert in a loop) keep the tightest one.
            tighter = (clause_margin is not None
                       and (clause["margin"] is None or clause_margin < clause["margin"]))
            if clause["values"] is None or tighter or (not ok and clause["passed"]):
                clause["values"] = [short(v) for v in values]
                clause["margin"] = clause_margin
            clause["passed"] = clause["passed"] and ok
            failed = failed or not ok
        if failed:
            entry["failures"] += 1

    def glue(self, name: str, value: Any) -> None:
        recorded = short(value)
        if isinstance(recorded, float | int | bool) or (isinstance(recorded, str)
                                                        and not recorded.startswith("<")):
            self.glued[name] = recorded

    def post_run_cell(self, result: Any) -> None:
        with open(self.path, "w") as f:
            json.dump({"asserts": self.asserts, "glued": self.glued}, f)


OPS_BY_NAME = {name: fn for name, fn in OPS.values()}


class AssertRewriter(ast.NodeTransformer):
    """``assert a < b and c`` → a call that records each clause's values and does not raise."""

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        if any(isinstance(n, ast.NamedExpr | ast.Await | ast.Yield | ast.YieldFrom)
               for n in ast.walk(node.test)):
            return node  # a thunk would change what the expression binds or means; leave it
        parts = node.test.values if isinstance(node.test, ast.BoolOp) and isinstance(
            node.test.op, ast.And) else [node.test]
        clauses = []
        for part in parts:
            if isinstance(part, ast.Compare) and all(type(o) in OPS for o in part.ops):
                op = ast.Tuple([ast.Constant(OPS[type(o)][0]) for o in part.ops], ast.Load())
                operands = [part.left, *part.comparators]
            else:
                op, operands = ast.Constant(None), [part]
            thunks = ast.List([ast.Lambda(ast.arguments([], [], None, [], [], None, []), e)
                               for e in operands], ast.Load())
            clauses.append(ast.Tuple([ast.Constant(ast.unparse(part)), op, thunks], ast.Load()))
        call = ast.Call(ast.Attribute(ast.Name(HOOK, ast.Load()), "record", ast.Load()),
                        [ast.Constant(node.lineno), ast.Constant(ast.unparse(node.test)),
                         ast.List(clauses, ast.Load())], [])
        return ast.copy_location(ast.Expr(call), node)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        return node  # lambdas cannot see a class body's names: leave asserts there as they are


def install(ip: Any) -> Recorder:
    """Install the recorder in the IPython shell ``ip``."""
    recorder = Recorder(os.environ[LOG_ENV])
    ip.user_ns[HOOK] = recorder
    ip.ast_transformers.append(AssertRewriter())
    ip.events.register("pre_run_cell", recorder.pre_run_cell)
    ip.events.register("post_run_cell", recorder.post_run_cell)
    import myst_nb

    original = myst_nb.glue

    def glue(name: str, variable: Any, display: bool = True) -> None:
        recorder.glue(name, variable)
        return original(name, variable, display)

    myst_nb.glue = glue
    return recorder
