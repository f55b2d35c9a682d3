"""What a function reaches: the one walk that capture, shipping and a job's identity share.

From fn and its arguments the walk follows two kinds of reference, by one rule each:

* **code** (the globals a function's code names, a module attribute as in ``helpers.score``,
  the members and bases of a class) only where it is the caller's own (``__main__``, a
  notebook, a local module: ``is_callers`` of its module's name). Installed code is imported
  by name on a worker and what it reaches is its own business.
* **values** attached to whatever was reached (a closure's cells, defaults, a decorated
  function's target, a partial's arguments, a bound method's instance, a container's elements,
  the attributes of an instance of the caller's class) always: the caller made them, and they
  travel by value even inside an installed function (a library's decorator around the
  caller's function keeps it in a closure).

``references`` says what one object refers to, in an order that depends only on the object
(a job's fingerprint hashes in that order); ``walk`` visits everything reached, once each.
Each user keeps what it does with an object: gpar/environment.py collects the caller's global
names, envpack/imports.py the imports in code, gpar/jobid.py a fingerprint.
"""

from __future__ import annotations

import dis
import functools
import itertools
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, NamedTuple, get_args

#: What a reference is; only GLOBAL is told apart by a user (the caller's names).
ReferenceKind = Literal["global", "attribute", "closure", "default", "wrapped", "part",
                        "member", "base", "element"]
GLOBAL, ATTRIBUTE, CLOSURE, DEFAULT, WRAPPED, PART, MEMBER, BASE, ELEMENT = get_args(ReferenceKind)

#: Values that refer to nothing: skipped inside containers, where a table of records is many.
_ATOMS = frozenset({int, float, complex, bool, str, bytes, type(None)})
_SEQUENCES = frozenset({list, tuple, set, frozenset})


def is_atom(value: Any) -> bool:
    """Whether ``value`` refers to nothing the walk follows (a number, a string, None)."""
    return type(value) in _ATOMS


class Reference(NamedTuple):
    """One object's reference to another: how (GLOBAL, CLOSURE, ...), by what name, to what."""

    kind: ReferenceKind
    name: str
    value: Any


def walk(roots: Iterable[Any], is_callers: Callable[[str], bool], *,
         attributes: bool = True) -> Iterator[tuple[Any, list[Reference]]]:
    """Each object reached from ``roots`` once, depth first, with its references.

    ``attributes``: a name the code uses as an attribute counts as the global of that name
    (``self.rng`` as ``rng``): an over-approximation for users to whom a missed global costs
    more than a spare one (shipping, naming what cannot be pickled).
    """
    is_callers = functools.cache(is_callers)
    seen: set[int] = set()
    stack = list(roots)[::-1]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))  # obj lives as long as the roots refer to it: its id stays its own
        found = references(obj, is_callers, attributes=attributes)
        yield obj, found
        stack.extend(reference.value for reference in reversed(found))


def references(obj: Any, is_callers: Callable[[str], bool], *,
               attributes: bool = True) -> list[Reference]:
    """What ``obj`` refers to that the walk follows (see the module's docstring)."""
    kind = type(obj)
    if kind in _ATOMS:
        return []
    follow = _BY_TYPE.get(kind)
    if follow is not None:
        return follow(obj, is_callers, attributes)
    if isinstance(obj, type):
        return _class_references(obj, is_callers, attributes)
    if isinstance(obj, dict):
        return _elements(obj.values())
    if isinstance(obj, list | tuple | set | frozenset):
        return _elements(obj)
    wrapped = _instance_dict(obj).get("__wrapped__") if callable(obj) else None
    if wrapped is not None:  # functools.lru_cache and kin
        return [Reference(WRAPPED, "__wrapped__", wrapped)]
    if is_callers(kind.__module__ or "__main__"):
        return _instance_references(obj)
    return []


def _function_references(function: types.FunctionType, is_callers: Callable[[str], bool],
                         attributes: bool) -> list[Reference]:
    found = [*_closure(function), *_defaults(function)]
    wrapped = vars(function).get("__wrapped__")
    if wrapped is not None:  # functools.wraps: the decorated function runs too
        found.append(Reference(WRAPPED, "__wrapped__", wrapped))
    if is_callers(function.__module__ or "__main__"):
        found[:0] = _named_by_code(function, is_callers, attributes)
    return found


def _named_by_code(function: types.FunctionType, is_callers: Callable[[str], bool],
                   attributes: bool) -> Iterator[Reference]:
    """The globals its code (nested code too) names, and the attributes it names of the
    caller's modules among them (``helpers.score``); a module's ``__dict__``, not getattr,
    so a module ``__getattr__`` never warns (numpy's ``np.object``) nor imports lazily."""
    scope = function.__globals__
    names = code_names(function.__code__)
    for name in names if attributes else globals_loaded(function.__code__):
        if name not in scope:
            continue
        value = scope[name]
        yield Reference(GLOBAL, name, value)
        if isinstance(value, types.ModuleType) and is_callers(value.__name__):
            members = vars(value)
            yield from (Reference(ATTRIBUTE, f"{name}.{attribute}", members[attribute])
                        for attribute in names if attribute in members)


def _closure(function: types.FunctionType) -> Iterator[Reference]:
    for name, cell in zip(function.__code__.co_freevars, function.__closure__ or (),
                          strict=True):
        try:
            yield Reference(CLOSURE, name, cell.cell_contents)
        except ValueError:  # an empty cell: a variable not yet assigned
            continue


def _defaults(function: types.FunctionType) -> Iterator[Reference]:
    code, positional = function.__code__, function.__defaults__ or ()
    names = code.co_varnames[code.co_argcount - len(positional):code.co_argcount]
    yield from (Reference(DEFAULT, name, value)
                for name, value in zip(names, positional, strict=True))
    yield from (Reference(DEFAULT, name, value)
                for name, value in (function.__kwdefaults__ or {}).items())


def _method_references(method: types.MethodType, *_: Any) -> list[Reference]:
    return [Reference(PART, "__func__", method.__func__),
            Reference(PART, "__self__", method.__self__)]


def _partial_references(partial: functools.partial, *_: Any) -> list[Reference]:
    return [Reference(PART, "func", partial.func),
            *(Reference(PART, str(i), arg) for i, arg in enumerate(partial.args)),
            *(Reference(PART, key, value) for key, value in partial.keywords.items())]


def _descriptor_references(descriptor: staticmethod | classmethod, *_: Any) -> list[Reference]:
    return [Reference(PART, "__func__", descriptor.__func__)]


def _property_references(prop: property, *_: Any) -> list[Reference]:
    return [Reference(PART, name, function)
            for name, function in (("fget", prop.fget), ("fset", prop.fset), ("fdel", prop.fdel))
            if function is not None]


def _class_references(cls: type, is_callers: Callable[[str], bool], *_: Any) -> list[Reference]:
    """A class of the caller's: its members (methods, constants, nested classes; not the
    bookkeeping dunders such as ``__dict__`` or ``__module__``) and its bases, whose methods
    its instances run too."""
    if not is_callers(cls.__module__ or "__main__"):
        return []
    return [*(Reference(MEMBER, name, member) for name, member in vars(cls).items()
              if not (name.startswith("__") and name.endswith("__")) or callable(member)),
            *(Reference(BASE, base.__qualname__, base) for base in cls.__bases__
              if base is not object)]


def _instance_references(obj: Any) -> list[Reference]:
    """An instance of the caller's class: its class (its methods run) and its attributes."""
    return [Reference(BASE, "__class__", type(obj)),
            *(Reference(MEMBER, name, value) for name, value in _instance_dict(obj).items())]


def _instance_dict(obj: Any) -> dict[str, Any]:
    """``vars(obj)``, or nothing; never a class's ``__getattr__`` (a proxy's may do anything)."""
    try:
        attributes = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return {}
    return attributes if isinstance(attributes, dict) else {}


def _elements(values: Iterable[Any]) -> list[Reference]:
    """A container's elements that can refer to anything: checked by their types at C speed
    first, so a table of records (a list of dicts or tuples of numbers and strings) costs
    little more than its length."""
    kinds = set(map(type, values))
    if kinds <= _ATOMS or (kinds <= _SEQUENCES | {dict} and _only_atoms(values, kinds)):
        return []
    return [Reference(ELEMENT, "", value) for value in values if type(value) not in _ATOMS]


def _only_atoms(containers: Iterable[Any], kinds: set[type]) -> bool:
    """Whether containers of these kinds (all dicts, or no dict) hold atoms only."""
    if kinds == {dict}:
        inner = itertools.chain.from_iterable(map(dict.values, containers))
    elif dict in kinds:
        return False
    else:
        inner = itertools.chain.from_iterable(containers)
    return set(map(type, inner)) <= _ATOMS


def _nothing(*_: Any) -> list[Reference]:
    """A module is followed only through the attributes code names of it."""
    return []


_BY_TYPE: dict[type, Callable[..., list[Reference]]] = {
    types.FunctionType: _function_references,
    types.MethodType: _method_references,
    functools.partial: _partial_references,
    staticmethod: _descriptor_references,
    classmethod: _descriptor_references,
    property: _property_references,
    types.ModuleType: _nothing,
}


def unwrap(obj: Any) -> Any:
    """The function under partials, bound methods and decorators: whose code and globals a
    call runs (the caller's, even under an installed decorator)."""
    seen = set()
    while id(obj) not in seen:  # a decorator may name itself as what it wraps
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif isinstance(obj, types.MethodType):
            obj = obj.__func__
        elif callable(obj) and "__wrapped__" in _instance_dict(obj):
            obj = obj.__wrapped__
        else:
            break
    return obj


def nested_code(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and the code of the functions, lambdas and comprehensions defined in it."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from nested_code(const)


@functools.lru_cache(maxsize=4096)
def code_names(code: types.CodeType) -> tuple[str, ...]:
    """Every name the code and its nested code use: globals, attributes, imported names."""
    return tuple(dict.fromkeys(name for nested in nested_code(code) for name in nested.co_names))


@functools.lru_cache(maxsize=4096)
def globals_loaded(code: types.CodeType) -> tuple[str, ...]:
    """The names the code and its nested code load as globals."""
    return tuple(dict.fromkeys(
        instruction.argval for nested in nested_code(code)
        for instruction in dis.get_instructions(nested)
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME")))
