"""What the per-call modules need of `typing` while they run, without importing `typing`.

`import typing` costs a thin-mode process ~4 ms on top of `re`, which it also imports (issue 10.7), and a
`typing.NamedTuple` class with postponed annotations compiles every field's annotation into a ForwardRef (~0.2 ms a
class, ~30 classes on the ADD path). Annotations are never evaluated here (`from __future__ import annotations`), so
the modules on the CNI hot path import their typing names under `if TYPE_CHECKING:` and take from this module the few
that must exist at run time. For mypy each name below *is* typing's (the first branch); at run time:
- `NamedTuple`: a base class that makes `collections.namedtuple` from the class body's annotations and defaults and
  keeps the body's methods and docstring, as typing.NamedTuple does (no generic records, no zero-argument super());
- `cast`: returns its value; `TypeVar` returns its name; `Generic` and `Protocol`: empty base classes.
Modules off the hot path (the daemon, tools, the Kubernetes client) use typing as usual.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Generic, NamedTuple, Protocol, TypeVar, cast
else:
    from collections import namedtuple as _namedtuple

    _NOT_COPIED = frozenset({"__annotations__", "__module__", "__qualname__", "__dict__", "__weakref__"})

    class _RecordMeta(type):
        def __new__(mcls, name, bases, namespace):
            if not bases:  # NamedTuple itself
                return super().__new__(mcls, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            defaults = [namespace[field] for field in fields if field in namespace]
            if any(field in namespace for field in fields[:len(fields) - len(defaults)]):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            record = _namedtuple(name, fields, defaults=defaults, module=namespace.get("__module__"))
            for key, value in namespace.items():
                if key not in _NOT_COPIED and key not in fields:
                    setattr(record, key, value)
            record.__qualname__ = namespace.get("__qualname__", name)
            return record

    class NamedTuple(metaclass=_RecordMeta):
        pass

    def cast(_type, value):
        return value

    def TypeVar(name, *_constraints, **_options):
        return name

    class Generic:
        def __class_getitem__(cls, _params):
            return cls

    class Protocol:
        pass

__all__ = ["TYPE_CHECKING", "Generic", "NamedTuple", "Protocol", "TypeVar", "cast"]
