"""What a function will import when it runs, found in code without running or importing it.

``import pandas as pd`` inside fn's body (the idiom Ray's own docs recommend) loads pandas only on
the worker: the caller's ``sys.modules`` never sees it, so an image built from it alone lacks it.
This module reads the bytecode instead: the ``import`` statements (IMPORT_NAME) and the
``importlib.import_module("literal")`` / ``__import__("literal")`` calls of fn's code, of the code
nested in it, and of the functions, classes, methods and closures it reaches through its
globals, as far as they are the caller's own code (``__main__``, a notebook, a local module):
an installed distribution's imports are its requirements' business. A local module that is
imported but not loaded is read from its file (discover.py does that): all of its code.

Found names are absolute and dotted as written (``from a.b import c`` gives ``a.b``); relative
imports stay inside their own package, which ships whole, and are not reported.
"""

from __future__ import annotations

import dis
import functools
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

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
    for nested in _nested_code(code):
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
    """The imports in the code of ``roots`` (fn, its arguments) and of what they reach through
    globals, closures, defaults, classes and methods, following only objects whose module
    ``is_callers`` (by module name: ``__main__``, a local module; not an installed one)."""
    found: dict[Import, None] = {}
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = unwrap(stack.pop())
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            if is_callers(obj.__module__ or "__main__"):
                found.update(dict.fromkeys(_function_imports(obj)))
                stack.extend(_reached_from_function(obj))
            if hasattr(obj, "__wrapped__"):  # a decorated function: the wrapper and its target
                stack.append(obj.__wrapped__)
        elif isinstance(obj, type):
            if is_callers(obj.__module__):
                stack.extend(_members(obj))
        elif isinstance(obj, types.ModuleType):
            continue  # a loaded module is in sys.modules: the manifest has it
        elif is_callers(type(obj).__module__):
            stack.append(type(obj))  # an instance of the caller's class: its methods run
    return tuple(found)


def _function_imports(function: types.FunctionType) -> tuple[Import, ...]:
    """Its imports, each labelled by the function it is in (``helpers.score``, or ``fn`` in
    ``__main__``)."""
    module = function.__module__ or "__main__"
    prefix = "" if module == "__main__" else f"{module}."
    return tuple(Import(found.name, prefix + found.where)
                 for found in imports_in_code(function.__code__))


def _reached_from_function(function: types.FunctionType) -> Iterator[Any]:
    """What a function's code can reach: the globals its code names (attributes of modules
    too, as ``helpers.score``), its closure, its defaults."""
    scope = function.__globals__
    names = {name for code in _nested_code(function.__code__) for name in code.co_names}
    for name in names:
        value = scope.get(name)
        if isinstance(value, types.ModuleType):  # its __dict__: a module __getattr__ may warn
            attributes = vars(value)  # (numpy's np.object) or import lazily
            yield from (attributes[attribute] for attribute in names
                        if isinstance(attributes.get(attribute), types.FunctionType | type))
        elif value is not None:
            yield value
    for cell in function.__closure__ or ():
        try:
            yield cell.cell_contents
        except ValueError:  # an empty cell
            continue
    yield from function.__defaults__ or ()
    yield from (function.__kwdefaults__ or {}).values()


def _members(cls: type) -> Iterator[Any]:
    """The functions of a class and of its bases: the methods its instances run."""
    for klass in cls.__mro__:
        if klass.__module__ == "builtins":
            continue
        for member in vars(klass).values():
            if isinstance(member, property):
                yield from (member.fget, member.fset, member.fdel)
            elif isinstance(member, staticmethod | classmethod):
                yield member.__func__
            elif isinstance(member, types.FunctionType):
                yield member


def unwrap(obj: Any) -> Any:
    """The function under partials and bound methods: whose code and globals a call runs."""
    while True:
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif isinstance(obj, types.MethodType):
            obj = obj.__func__
        else:
            return obj


def _nested_code(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested_code(const)


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
