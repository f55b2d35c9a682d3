"""What a function will import when it runs, found in code without running or importing it.

``import pandas as pd`` inside fn's body (the idiom Ray's own docs recommend) loads pandas only on
the worker: the caller's ``sys.modules`` never sees it, so an image built from it alone lacks it.
This module reads the bytecode instead: the ``import`` statements (IMPORT_NAME) and the
``importlib.import_module("literal")`` / ``__import__("literal")`` calls of fn's code, of the code
nested in it, and of the functions it reaches (reach.py: through globals, closures, defaults,
classes and methods), as far as they are the caller's own code (``__main__``, a notebook, a
local module): an installed distribution's imports are its requirements' business. A local
module that is imported but not loaded is read from its file (discover.py does that): all of
its code.

Found names are absolute and dotted as written (``from a.b import c`` gives ``a.b``); relative
imports stay inside their own package, which ships whole, and are not reported.
"""

from __future__ import annotations

import dis
import functools
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from envpack import reach

#: Calls whose literal first argument names a module to import.
_IMPORT_CALLS = frozenset({"import_module", "__import__"})
#: What comes between loading a callable and its arguments (3.11, 3.12).
_CALL_SETUP = frozenset({"PUSH_NULL", "KW_NAMES", "CACHE", "PRECALL"})


@dataclass(frozen=True)
class Import:
    """A module some code imports: its absolute dotted name, and where the import is."""

    name: str
    where: str  # "fn", "helpers.score", "analysis.py:fit"


def imports_in_code(code: types.CodeType, where: str | None = None) -> tuple[Import, ...]:
    """The absolute imports in ``code`` and every code object nested in it, each with the
    qualified name of the function it is in (prefixed by ``where``)."""
    found = []
    for nested in reach.nested_code(code):
        place = nested.co_qualname if nested.co_qualname != "<module>" else "top level"
        label = f"{where}:{place}" if where else place.replace(".<locals>", "")
        found.extend(Import(name, label) for name in _names_imported(nested))
    return tuple(found)


def imports_in_source(path: str) -> tuple[Import, ...]:
    """The imports of a Python file, all its code; a file that does not compile has none
    (the worker will say what is wrong with it, as the caller's interpreter would)."""
    try:
        with open(path, "rb") as stream:
            code = compile(stream.read(), path, "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError):
        return ()
    return imports_in_code(code, where=path)


def imports_reached(roots: Iterable[Any], is_callers: Callable[[str], bool]) -> tuple[Import, ...]:
    """The imports in the code of the functions ``roots`` (fn, its arguments) reach
    (reach.py), as far as they are the caller's own code (``is_callers`` of their module's
    name: ``__main__``, a local module; not an installed one)."""
    found: dict[Import, None] = {}
    for obj, _ in reach.walk(roots, is_callers):
        if isinstance(obj, types.FunctionType) and is_callers(obj.__module__ or "__main__"):
            found.update(dict.fromkeys(_function_imports(obj)))
    return tuple(found)


def _function_imports(function: types.FunctionType) -> tuple[Import, ...]:
    """Its imports, each labelled by the function it is in (``helpers.score``, or ``fn`` in
    ``__main__``)."""
    module = function.__module__ or "__main__"
    prefix = "" if module == "__main__" else f"{module}."
    return tuple(Import(found.name, prefix + found.where)
                 for found in imports_in_code(function.__code__))


@functools.lru_cache(maxsize=4096)
def _names_imported(code: types.CodeType) -> tuple[str, ...]:
    """This code object's own absolute imports (nested code objects not included): each
    ``import a.b`` as ``a.b``, each ``from a import b`` as ``a`` and ``a.b`` (b may be a
    submodule), each ``import_module("a")`` as ``a``."""
    names: list[str] = []
    constants: list[Any] = []  # the last two LOAD_CONST values: an import's level, fromlist
    importing: str | None = None  # the module the last absolute IMPORT_NAME named
    calling = False  # import_module or __import__ was just loaded
    for instruction in dis.get_instructions(code):
        op, value = instruction.opname, instruction.argval
        if op == "LOAD_CONST":
            constants = [*constants[-1:], value]
            if calling and isinstance(value, str):
                names.append(value)
            calling = False
            continue
        if op in _CALL_SETUP:
            continue
        if op == "IMPORT_NAME":
            level = constants[0] if len(constants) == 2 else 0
            importing = value if level == 0 else None
            if importing:
                names.append(importing)
        elif op == "IMPORT_FROM" and importing:
            names.append(f"{importing}.{value}")
        calling = op.startswith("LOAD") and value in _IMPORT_CALLS
        constants = []
    return tuple(dict.fromkeys(names))


def top_level(name: str) -> str:
    """``a`` of ``a.b.c``."""
    return name.partition(".")[0]


def is_standard_library(name: str) -> bool:
    return top_level(name) in sys.stdlib_module_names
