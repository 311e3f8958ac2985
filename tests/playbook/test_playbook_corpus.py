"""One test for every broken playbook in tests/corpus/playbook/: adding a case is adding a file.

Each case's first line is ``# expect: LINE:COL: message fragment``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandfleet.errors import InputError
from sandfleet.load.playbook import load_playbook

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "playbook"
CASES = sorted(CORPUS.glob("*.yml"))
EXPECT = re.compile(r"# expect: (\d+):(\d+): (.+)")


def test_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_broken_playbook_is_reported_at_its_position(case: Path):
    header = case.read_text(encoding="utf-8").split("\n", 1)[0]
    expect = EXPECT.fullmatch(header)
    assert expect, f"{case.name}: first line must be '# expect: LINE:COL: fragment'"
    line, col, fragment = int(expect[1]), int(expect[2]), expect[3]

    with pytest.raises(InputError) as info:
        load_playbook(str(case))

    err = info.value
    assert err.mark is not None
    assert (err.mark.file, err.mark.line, err.mark.col) == (str(case), line, col), str(err)
    assert fragment in str(err)
    assert str(err).startswith(f"{case}:{line}:{col}: error: ")
