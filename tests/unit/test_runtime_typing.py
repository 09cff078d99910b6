"""metaplug.cni.runtime_typing.NamedTuple behaves as typing.NamedTuple for the records of the hot path (issue 10.7:
typing is not imported by thin-mode calls)."""

from __future__ import annotations

import typing

import pytest

from metaplug.cni import runtime_typing


class Ours(runtime_typing.NamedTuple):
    """A record."""

    name: str
    count: int = 0
    tags: tuple[str, ...] = ()

    def label(self) -> str:
        return f"{self.name}:{self.count}"

    @property
    def empty(self) -> bool:
        return not self.tags


class Theirs(typing.NamedTuple):
    """A record."""

    name: str
    count: int = 0
    tags: tuple[str, ...] = ()


def test_fields_defaults_and_tuple_behaviour_match_typing() -> None:
    ours, theirs = Ours("a"), Theirs("a")
    assert Ours._fields == Theirs._fields == ("name", "count", "tags")
    assert Ours._field_defaults == Theirs._field_defaults
    assert tuple(ours) == tuple(theirs) == ("a", 0, ())
    assert ours == theirs  # both are tuples
    assert repr(Ours("a", 2)) == "Ours(name='a', count=2, tags=())"
    assert ours._replace(count=3) == Ours("a", 3)
    assert Ours(name="b", tags=("x",))._asdict() == {"name": "b", "count": 0, "tags": ("x",)}
    assert isinstance(ours, tuple) and Ours.__doc__ == "A record."
    assert Ours.__qualname__ == "Ours" and Ours.__module__ == __name__


def test_methods_and_properties_are_kept() -> None:
    assert Ours("n", 4).label() == "n:4"
    assert Ours("n").empty and not Ours("n", tags=("t",)).empty


def test_records_are_immutable_and_check_arguments() -> None:
    with pytest.raises(AttributeError):
        Ours("a").name = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Ours()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Ours("a", 1, (), 4)  # type: ignore[call-arg]


def test_a_field_without_default_after_one_with_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default"):
        class Bad(runtime_typing.NamedTuple):
            first: int = 0
            second: int  # type: ignore[misc]


def test_the_other_runtime_names_are_inert() -> None:
    assert runtime_typing.cast("int", "x") == "x"
    assert runtime_typing.TypeVar("T") == "T"
    assert runtime_typing.Generic[int] is runtime_typing.Generic  # type: ignore[misc]
