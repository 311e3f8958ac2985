"""Regenerate the golden outputs from real Ansible (not run by the tests).

    python3 -m venv /tmp/ansible-venv && /tmp/ansible-venv/bin/pip install 'ansible-core==2.19.*'
    cd tests/inventory/golden && /tmp/ansible-venv/bin/python generate.py

For every family in cases.yml and every variant of it, this runs ``ansible-inventory --list``,
``--graph`` and ``--host`` and evaluates the patterns with Ansible's InventoryManager, checks
that all variants agree, and writes expected/<family>/. A pattern Ansible rejects is recorded
as {"error": true}. Each pattern is evaluated six times in fresh managers to make sure Ansible's own
order is stable for it (Ansible walks group levels as sets); where it is not, only the set of
hosts is recorded, with "unordered": true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def run(*args: str) -> str:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0"}
    return subprocess.run([str(BIN / "ansible-inventory"), *args], check=True, capture_output=True,
                          text=True, cwd=HERE, env=env).stdout


def patterns(sources: list[str], cases: list[list[str | None]]) -> list[dict[str, object]]:
    out = []
    for pattern, limit in cases:
        results = []
        for _ in range(6):
            manager = InventoryManager(loader=DataLoader(), sources=sources)
            manager.subset(limit)
            try:
                results.append([h.name for h in manager.get_hosts(pattern)])
            except Exception:
                results.append(None)
        entry: dict[str, object] = {"pattern": pattern, "limit": limit}
        if results[0] is None:
            assert all(r is None for r in results)
            entry["error"] = True
        elif all(r == results[0] for r in results):
            entry["hosts"] = results[0]
        else:  # Ansible's order varies between runs here: only the set of hosts is golden
            assert all(sorted(r or []) == sorted(results[0]) for r in results)
            entry["hosts"] = sorted(results[0])
            entry["unordered"] = True
        out.append(entry)
    return out


def main() -> None:
    os.chdir(HERE)
    cases = yaml.safe_load((HERE / "cases.yml").read_text())
    for family, case in cases.items():
        outputs = []
        for variant, sources in case["variants"].items():
            paths = [str(Path("inventories") / s) for s in sources]
            args = [a for p in paths for a in ("-i", p)]
            outputs.append((variant, {
                "list.json": run(*args, "--list"),
                "graph.txt": run(*args, "--graph"),
                "hosts.json": json.dumps({h: json.loads(run(*args, "--host", h)) for h in case["hosts"]},
                                         indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                "patterns.json": json.dumps(patterns(paths, case["patterns"]), indent=2,
                                            ensure_ascii=False) + "\n",
            }))
        first_variant, first = outputs[0]
        for variant, other in outputs[1:]:
            for name, text in first.items():
                assert other[name] == text, f"{family}: {variant} and {first_variant} differ in {name}"
        target = HERE / "expected" / family
        target.mkdir(parents=True, exist_ok=True)
        for name, text in first.items():
            (target / name).write_text(text, encoding="utf-8")
        print(f"{family}: {', '.join(v for v, _ in outputs)}")


if __name__ == "__main__":
    main()
