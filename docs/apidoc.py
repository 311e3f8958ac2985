"""Writes docs/api.md from the public API's own signatures and docstrings.

``python docs/apidoc.py`` rewrites the file; tests/test_docs.py fails when it is out of date, so
the reference can never drift from the code. Standard library only (``inspect``): a dozen public
names do not need a documentation generator as a dependency.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from pathlib import Path
from typing import Any

import sandfleet

OUT = Path(__file__).with_name("api.md")

HEAD = """# Python API reference

Generated from the docstrings by `python docs/apidoc.py` (a test keeps it current). The guide, with
examples, is the README's "From Python" section; everything not listed here is internal.

```python
import sandfleet
```
"""


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _signature(name: str, obj: Any) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return name
    return f"{name}{sig}"


def _section(name: str, obj: Any) -> list[str]:
    if inspect.isclass(obj):
        kind = "exception" if issubclass(obj, BaseException) else "class"
        lines = [f"## `{name}` ({kind})", "", _doc(obj), ""]
        if dataclasses.is_dataclass(obj):
            lines += ["Fields: " + ", ".join(f"`{f.name}`" for f in dataclasses.fields(obj) if f.repr), ""]
        for member, value in vars(obj).items():
            if member.startswith("_") or not (inspect.isfunction(value) or isinstance(value, property)):
                continue
            target = value.fget if isinstance(value, property) else value
            shown = f"{name}.{member}" if isinstance(value, property) else _signature(f"{name}.{member}", value)
            lines += [f"### `{shown}`", "", _doc(target) or "(see above)", ""]
        return lines
    if name == "__version__":
        return []
    return [f"## `{_signature(name, obj)}`", "", _doc(obj), ""]


def render() -> str:
    lines = [HEAD]
    for name in sandfleet.__all__:
        lines += _section(name, getattr(sandfleet, name))
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
