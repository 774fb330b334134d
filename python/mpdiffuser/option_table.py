"""The sampler options' table, csrc/include/mpdiffuser/options.def, read without the native core.

The compiled core serves the table to Python (`_core.option_specs()`); a training node without it
(`import mpdiffuser.data`, `mpdiffuser.training`) reads the same file, installed beside the package,
with `parse`. A test checks that both give the same table."""

from __future__ import annotations

from pathlib import Path

KINDS = {"COUNT": "count", "REAL": "real", "OPTIONAL_REAL": "optional_real"}
BOUNDS = {"MPD_BOUND_NONE": "none", "MPD_BOUND_HORIZON": "horizon", "MPD_BOUND_LEVELS": "levels"}
FIELDS = ("name", "default", "low", "high", "bound", "since", "legacy", "flags", "help")


def _arguments(text: str, start: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the macro call whose '(' is at text[start - 1], C string
    literals unquoted (adjacent ones joined); returns them and the index after the closing ')'."""
    args, current, i, depth = [], "", start, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            end = i + 1
            while text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            current += "\x00" + text[i + 1:end].replace('\\"', '"').replace("\\\\", "\\")
            i = end + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif c in ",)":
            args.append(current.strip())
            current = ""
            if c == ")":
                return args, i + 1
            i += 1
            continue
        current += c
        i += 1
    raise ValueError("options.def: a macro call without its ')'")


def parse(text: str) -> list[dict]:
    """The table as `_core.option_specs()` gives it: one dict per option, in the file's order."""
    out = []
    position = 0
    while (found := text.find("\nMPD_OPTION_", position)) >= 0:
        open_paren = text.index("(", found)
        kind = KINDS[text[found + len("\nMPD_OPTION_"):open_paren]]
        args, position = _arguments(text, open_paren + 1)
        raw = dict(zip(FIELDS, args))
        count = kind == "count"
        number = (lambda s: int(float(s))) if count else float
        strings = {k: raw[k].replace("\x00", "").strip() for k in ("legacy", "flags", "help")}
        out.append({"name": raw["name"], "kind": kind,
                    "default": None if kind == "optional_real" else number(raw["default"]),
                    "low": number(raw["low"]), "high": number(raw["high"]), "bound": BOUNDS[raw["bound"]],
                    "since": int(raw["since"])} | strings)
    if not out:
        raise ValueError("options.def declares no option")
    return out


def messages(text: str) -> dict[str, str]:
    """The table's message strings (#define MPD_OPTION_RANGE_MESSAGE, _COUNT_WORD, _REAL_WORD) by
    name without the prefix: "RANGE_MESSAGE" (a printf format, read with Python's %), ..."""
    import re

    found = dict(re.findall(r'#define MPD_OPTION_(\w+) "((?:[^"\\]|\\.)*)"', text))
    if set(found) != {"RANGE_MESSAGE", "COUNT_WORD", "REAL_WORD"}:
        raise ValueError(f"options.def: expected the range message and the kind words, found {sorted(found)}")
    return found


def table_file() -> Path:
    """options.def as installed beside the package, or in the source tree of an in-place run."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "options.def", here.parents[1] / "csrc" / "include" / "mpdiffuser" / "options.def"):
        if candidate.is_file():
            return candidate
    raise ImportError("mpdiffuser is installed without its option table (options.def) and without its native core; "
                      "reinstall it with `pip install .`")


def read() -> list[dict]:
    return parse(table_file().read_text())


def markdown(specs) -> str:
    """The option table as docs/design.md (section 3.3) shows it: one row per option, its flags
    and its help, in the table's order (a test holds the document to this)."""
    rows = ["| option | CLI flags | meaning |", "|---|---|---|"]
    for spec in specs:
        flags = ", ".join(f"`{f}`" for f in spec.flags.split()) or "(none)"
        rows.append(f"| `{spec.name}` | {flags} | {spec.help} |")
    return "\n".join(rows)
