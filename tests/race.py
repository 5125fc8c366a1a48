"""The check-then-swap attack, for real: another process swaps a model file in a tight loop.

`swapping(target, honest, evil)` starts an attacker process that atomically replaces
`target` with hard links to `honest` and `evil` in turn (bounded in count and time) while
the test loads through an integration. A load must either return the honest model or
raise IntegrityError; returning anything built from the evil bytes is a failure.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modelseal.errors import IntegrityError

_ATTACKER = r"""
import os, sys, time
target, honest, evil, stop = sys.argv[1:5]
tmp = target + ".swap"
deadline = time.monotonic() + 120
swaps = 0
while not os.path.exists(stop) and swaps < 5_000_000 and time.monotonic() < deadline:
    for source in (evil, honest):
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.link(source, tmp)
        os.replace(tmp, target)
        swaps += 1
# Leave the honest file in place.
os.link(honest, tmp)
os.replace(tmp, target)
print(swaps)
"""


@dataclass
class RaceResult:
    loads: int = 0
    refused: int = 0
    swaps: int = 0


@contextmanager
def swapping(target: Path, honest: Path, evil: Path) -> Iterator[RaceResult]:
    """Run the attacker for the duration of the block. `honest` and `evil` must be on the
    same file system as `target` but outside the model directory."""
    stop = target.parent.parent / f".stop-{target.name}"
    result = RaceResult()
    attacker = subprocess.Popen(
        [sys.executable, "-c", _ATTACKER, str(target), str(honest), str(evil), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield result
    finally:
        stop.touch()
        out, _ = attacker.communicate(timeout=60)
        stop.unlink()
        result.swaps = int(out.strip() or 0)


def race(
    target: Path,
    honest: Path,
    evil: Path,
    load: Callable[[], object],
    is_honest: Callable[[object], bool],
    attempts: int = 200,
) -> RaceResult:
    """Load `attempts` times while the file is swapped; every returned model must be honest."""
    with swapping(target, honest, evil) as result:
        for _ in range(attempts):
            try:
                loaded = load()
            except IntegrityError:
                result.refused += 1
                continue
            assert is_honest(loaded), "a load returned the swapped-in (evil) model"
            result.loads += 1
    assert result.swaps > 0, "the attacker never ran"
    assert result.loads > 0, "no honest load succeeded during the race"
    return result
