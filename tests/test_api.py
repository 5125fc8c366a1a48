"""The public surface: `__all__` is complete and importing modelseal stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import modelseal


@pytest.mark.parametrize("name", modelseal.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(modelseal, name) is not None


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError):
        _ = modelseal.no_such_thing  # type: ignore[attr-defined]


def test_errors_have_one_root() -> None:
    for name in (
        "UsageError",
        "IntegrityError",
        "SealError",
        "SignatureError",
        "ModelMismatchError",
        "UnsafeModelError",
    ):
        assert issubclass(getattr(modelseal, name), modelseal.Error)
    for name in ("SealError", "SignatureError", "ModelMismatchError", "UnsafeModelError"):
        assert issubclass(getattr(modelseal, name), modelseal.IntegrityError)


def test_import_and_version_do_not_load_heavy_modules() -> None:
    code = (
        "import sys, modelseal, modelseal._cli;"
        "heavy = [m for m in ('cryptography', 'rich', 'concurrent.futures', 'hashlib')"
        " if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
