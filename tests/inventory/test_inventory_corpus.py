"""Every broken inventory under tests/corpus/inventory/ fails with the expected message and line.

A case is a folder: the inventory file(s) plus ``expect.yml`` naming the source to load, the file
and line the error must point at, and a fragment of the message. Adding a case is adding a folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sandfleet.errors import InputError
from sandfleet.inventory import load_inventory

CORPUS = Path(__file__).parent.parent / "corpus" / "inventory"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expect.yml").is_file())


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", CASES)
def test_broken_inventory_is_reported_where_it_is_wrong(name: str) -> None:
    case = CORPUS / name
    expect = yaml.safe_load((case / "expect.yml").read_text(encoding="utf-8"))
    with pytest.raises(InputError) as info:
        inventory = load_inventory([str(case / expect["source"])])
        for host in inventory.hosts:
            inventory.host_config(host)
    err = info.value
    assert err.mark is not None, str(err)
    assert Path(err.mark.file).as_posix().endswith(f"{name}/{expect['file']}"), str(err)
    assert err.mark.line == expect["line"], str(err)
    assert expect["message"] in str(err), str(err)
    assert "Traceback" not in str(err)
