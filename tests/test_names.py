"""The resource-name rules: what may stand in a manifest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelseal._internal import names

SAFE = ["a", "a.bin", "weights/layer0.bin", "deep/er/still/x", ".hidden", "dir/.x", "é/ü.bin", "."]
UNSAFE = [
    "",
    "/etc/passwd",
    "../x",
    "a/../b",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "a\x00b",
    "C:/x",
    "a/..",
    "line\nbreak",
    "bad\udcffname",
]


@pytest.mark.parametrize("name", SAFE)
def test_safe_names_pass(name: str) -> None:
    assert names.name_problem(name) is None


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused(name: str) -> None:
    assert names.name_problem(name) is not None
    with pytest.raises(ValueError, match=r"."):
        names.check_name(name)


@given(st.lists(st.sampled_from(["..", ".", ""]), min_size=1), st.text(min_size=1))
def test_any_dot_component_is_refused(bad: list[str], tail: str) -> None:
    assert names.name_problem("/".join(["ok", *bad, "x"])) is not None


PLAIN_TEXT = st.text(
    alphabet=st.characters(
        blacklist_characters="/\\:\x7f", blacklist_categories=("Cs", "Cc"), min_codepoint=0x20
    ),
    min_size=1,
)


@given(st.lists(PLAIN_TEXT.filter(lambda p: p not in (".", "..")), min_size=1, max_size=5))
def test_relative_paths_of_plain_components_pass(parts: list[str]) -> None:
    assert names.name_problem("/".join(parts)) is None


@given(PLAIN_TEXT, PLAIN_TEXT)
def test_absolute_and_backslash_forms_of_any_path_are_refused(a: str, b: str) -> None:
    assert names.name_problem(f"/{a}/{b}") is not None
    assert names.name_problem(f"{a}\\{b}") is not None
    assert names.name_problem(f"{a}\x00{b}") is not None


def test_case_and_unicode_collisions_are_found() -> None:
    assert names.first_collision(["a.bin", "A.BIN"]) == ("a.bin", "A.BIN")
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert names.first_collision([nfc, nfd]) == (nfc, nfd)
    assert names.first_collision(["a", "b", "a"]) == ("a", "a")
    assert names.first_collision(["a", "b/a", "c"]) is None


def test_sort_key_orders_like_path_components() -> None:
    # "a/b" sorts before "a-b" by components although "-" < "/" as characters.
    assert sorted(["a-b", "a/b"], key=names.sort_key) == ["a/b", "a-b"]


def test_is_under() -> None:
    assert names.is_under(".git/config", ".git")
    assert names.is_under(".git", ".git")
    assert not names.is_under(".gitx", ".git")
    assert not names.is_under("sub/.git/x", ".git")
