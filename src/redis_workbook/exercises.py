"""Unfinished exercises in a running notebook: one short message each, and no follow-on tracebacks.

A learner notebook fresh from `redis-workbook release` has stubs (`raise
NotImplementedError()`) where the exercises go. Run top to bottom untouched, every
demo that calls a stub would stop with a traceback that looks like a bug of the
workbook. Inside a Jupyter kernel, `import redis_workbook` registers an IPython
AST transformer that, cell by cell:

- when a cell defines a function or class whose body is still the stub, prints one
  line naming it and saying what to do ("write `knn_search` here: ...");
- when a cell uses an unfinished function (or a name a cell left unset because it
  needed one), runs it as written, and if it then fails, prints "finish `knn_search`
  above to see this" instead of the traceback;
- after such a cell, while those functions are still unfinished, does the same for
  cells that fail without naming them (they usually need what the function would
  have put in Redis), quoting the error;
- leaves every other cell exactly as it is, errors included, and never touches the
  check cells (`self_check`, `require`), which must fail as they are.

Nothing is hidden from a finished notebook: once a function is written, the cells
that use it run untransformed. The grader never relies on this (it calls the
functions itself), and the notebooks' check cells are never changed.
"""

from __future__ import annotations

import ast
import contextlib
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

NAMESPACE_NAME = "_redis_workbook_exercises"  # how generated code reaches the tracker from the notebook
CHECKS = {"require", "self_check"}  # the generated check cells, never touched


def _is_stub(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """True when the body is (a docstring and) `raise NotImplementedError` / `raise NotImplementedError()`."""
    body = list(function.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def _stub_methods(cls: ast.ClassDef) -> list[str]:
    return [node.name for node in cls.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and _is_stub(node)]


def _used_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _assigned_names(module: ast.Module) -> set[str]:
    names = {n.id for n in ast.walk(module) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


@dataclass
class Tracker:
    """Which learner functions are still stubs, and which names wait for them."""

    unfinished: dict[str, str] = field(default_factory=dict)  # name -> what to write
    waiting: dict[str, set[str]] = field(default_factory=dict)  # name a failed cell left unset -> stubs it needed
    last_blocked: list[str] = field(default_factory=list)  # the stubs the latest blocked cell needed

    def visit(self, module: ast.Module) -> ast.Module:
        """IPython's AST-transformer hook: called with each cell's code before it runs."""
        if _used_names(module) & CHECKS:
            return module  # the check cells must fail as they are: nbgrader scores them by their errors
        announce = self._definitions(module)
        needs = self._needs(module)
        if needs:
            module = self._guarded(module, needs, quote=False)
        elif self.unfinished.keys() & set(self.last_blocked):
            # A cell that names no stub but runs after one was skipped usually needs what the stub would
            # have put in Redis (an index, the hashes): say which, and what Redis answered.
            module = self._guarded(module, set(self.unfinished.keys() & set(self.last_blocked)), quote=True)
        if announce:
            module.body.append(ast.Expr(self._call("announce", announce)))
        return ast.fix_missing_locations(module)

    # -------------------------------------------------------------- what a cell defines and uses
    def _definitions(self, module: ast.Module) -> list[str]:
        """Record the stubs this cell defines (and the functions it finishes); the names to announce."""
        announce = []
        for node in module.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                stub = _is_stub(node)
                todo = f"`{node.name}`"
            elif isinstance(node, ast.ClassDef):
                methods = _stub_methods(node)
                stub = bool(methods)
                todo = f"`{node.name}` ({', '.join(f'`{m}`' for m in methods)})"
            else:
                continue
            self.waiting.pop(node.name, None)
            if stub:
                self.unfinished[node.name] = todo
                announce.append(node.name)
            else:
                self.unfinished.pop(node.name, None)
        return announce

    def _needs(self, module: ast.Module) -> set[str]:
        """The unfinished functions this cell depends on, directly or through names a failed cell left unset."""
        defined_here = {node.name for node in module.body
                        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        used = _used_names(module) - defined_here
        needs = {name for name in used if name in self.unfinished}
        for name in used & set(self.waiting):
            needs |= {stub for stub in self.waiting[name] if stub in self.unfinished}
        return needs

    # -------------------------------------------------------------- the guarded cell
    def _guarded(self, module: ast.Module, needs: set[str], quote: bool) -> ast.Module:
        """try: <cell> except Exception: finish-message; the last expression is still displayed."""
        body = list(module.body)
        last = body.pop() if body and isinstance(body[-1], ast.Expr) else None
        result = "_redis_workbook_last"
        if last is not None:
            body.append(ast.Assign(targets=[ast.Name(result, ast.Store())], value=last.value))
        error = "_redis_workbook_error"
        handler = ast.ExceptHandler(
            type=ast.Name("Exception", ast.Load()), name=error,
            body=[ast.Expr(self._call("blocked", sorted(needs), sorted(_assigned_names(module)),
                                      error=ast.Name(error, ast.Load()) if quote else ast.Constant(None)))]
            + ([ast.Assign(targets=[ast.Name(result, ast.Store())], value=ast.Constant(None))] if last else []))
        quiet = ast.With(items=[ast.withitem(self._call("quiet"))], body=body or [ast.Pass()])
        guarded: list[ast.stmt] = [ast.Try(body=[quiet], handlers=[handler], orelse=[
            ast.Expr(self._call("ran", sorted(_assigned_names(module))))], finalbody=[])]
        if last is not None:
            guarded.append(ast.Expr(ast.Name(result, ast.Load())))
        return ast.Module(body=guarded, type_ignores=[])

    @staticmethod
    def _call(method: str, *args: list[str], **kwargs: ast.expr) -> ast.Call:
        function = ast.Attribute(ast.Name(NAMESPACE_NAME, ast.Load()), method, ast.Load())
        return ast.Call(function, [ast.List([ast.Constant(a) for a in arg], ast.Load()) for arg in args],
                        [ast.keyword(name, value) for name, value in kwargs.items()])

    # -------------------------------------------------------------- called from the cells
    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Hold back the warnings of a cell that may yet fail for want of a stub (numpy's "Mean of empty slice")."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for warning in caught:  # the cell ran to the end: its warnings are real
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)

    def announce(self, names: list[str]) -> None:
        for name in names:
            if name in self.unfinished:
                print(f"✎ {self.unfinished[name]}: not written yet. Replace `raise NotImplementedError()` with "
                      "your code and run this cell again.")

    def blocked(self, needs: list[str], assigned: list[str], error: BaseException | None = None) -> None:
        for name in assigned:
            self.waiting[name] = set(needs)
        self.last_blocked = list(needs)
        names = [f"`{name}`" for name in needs]
        todo = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        said = f" (this cell stopped at {type(error).__name__}: {str(error)[:200]})" if error is not None else ""
        print(f"⏸ Finish {todo} above to see this{said}.")

    def ran(self, assigned: list[str]) -> None:
        for name in assigned:
            self.waiting.pop(name, None)


def install(shell: object | None = None) -> bool:
    """Register the tracker in this Jupyter kernel (once); False outside one (a script, the grader)."""
    if shell is None:
        ipython = sys.modules.get("IPython")  # a kernel has imported it already; importing it here costs 0.1 s
        if ipython is None:
            return False
        shell = ipython.get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    if any(isinstance(t, Tracker) for t in shell.ast_transformers):  # type: ignore[attr-defined]
        return True
    tracker = Tracker()
    shell.user_ns[NAMESPACE_NAME] = tracker  # type: ignore[attr-defined]
    shell.ast_transformers.append(tracker)  # type: ignore[attr-defined]
    return True
