#!/usr/bin/env python3
"""The import layering of a crate: which of its modules use which, and whether every use runs downward.

    python3 .ci/layers.py crates/hub/src            # the module graph, its circles, and the layer check
    python3 .ci/layers.py --check                   # every crate with a layer table below; exit 1 on a violation

A module's uses are the `crate::…` and `super::…` paths in its file (in `use` lines and inline), outside its
`#[cfg(test)]` tests. Each module is given the layer of the longest prefix in the crate's table; a use may go to
the same layer or a lower one, never to the `mod.rs` of its own folder (a folder's `mod.rs` is built from its
files, not under them), and no circle may form (within a layer either).
"""

import re
import sys
from pathlib import Path

# Lowest layer first. A module's layer is that of the longest entry that is a prefix of its path.
LAYERS = {
    "crates/hub/src": [
        # 0: vocabulary every layer speaks
        ["delivery", "settings", "error"],
        # 1: cross-cutting services: telemetry, authorisation, limits
        ["telemetry", "auth", "limits"],
        # 2: the fan-out (dispatcher, rooms, subscriptions, waiting long-polls, the open sessions) and database sources
        ["fanout", "cluster", "sources"],
        # 3: what routes and connections share
        ["state"],
        # 4: the connection actors
        ["connections"],
        # 5: the HTTP routes
        ["routes"],
        # 6: assembly and the command line
        ["startup", "cli", "smoke", "main", "lib"],
    ],
    "crates/storage/src": [
        ["error", "event", "retention"],
        ["recent", "policy"],
        ["event_log"],
        ["windowed", "memory", "redis", "nats", "postgres", "cluster", "tail"],
        ["log_actor"],
        ["lib"],
    ],
}

TEST_BLOCK = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*mod tests\b", re.M)
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
RAW = re.compile(r'r(#*)"')
CHAR = re.compile(r"'(\\.|[^\\'])'")
USE = re.compile(r"\buse\s+(crate|super)::\{", re.S)


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return tuple(parts)


def strip(text: str) -> str:
    """Drops tests, comments and the insides of string and character literals."""
    m = TEST_BLOCK.search(text)
    if m:
        text = text[: m.start()]
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            i = text.find("*/", i + 2)
            i = n if i < 0 else i + 2
        elif c == "r" and RAW.match(text, i) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = RAW.match(text, i).group(1)
            end = text.find('"' + hashes, i + len(hashes) + 2)
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and CHAR.match(text, i):
            i = CHAR.match(text, i).end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_groups(text: str) -> list[str]:
    """`use crate::{a::B, c::{D, E}}` → `crate::a::B`, `crate::c::D`, `crate::c::E`."""
    out = []
    for m in USE.finditer(text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.extend(flatten(m.group(1), text[m.end() : i - 1]))
    return out


def flatten(prefix: str, body: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, c in enumerate(body + ","):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(body[start:i].strip())
            start = i + 1
    paths = []
    for item in filter(None, items):
        if "{" in item:
            head, rest = item.split("{", 1)
            paths.extend(flatten(prefix + "::" + head.strip().rstrip(":").rstrip(":"), rest.rsplit("}", 1)[0]))
        else:
            paths.append(prefix + "::" + item.split(" as ")[0].strip())
    return paths


def resolve(modules: set, here: tuple, path: str):
    parts = path.split("::")
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    else:
        base = here
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
        rest = parts
    best = None
    for n in range(len(rest) + 1):
        candidate = base + tuple(rest[:n])
        if candidate in modules:
            best = candidate
    return best


def graph(src: Path):
    files = {module_of(src, f): f for f in src.rglob("*.rs")}
    modules = set(files) | {()}
    edges = {}
    for module, file in files.items():
        text = strip(file.read_text())
        found = set()
        for path in [m.group(0) for m in PATH.finditer(text)] + expand_groups(text):
            target = resolve(modules, module, path)
            # A module's own items and the crate root's re-exports are no dependency.
            if target and target != module and target != ():
                found.add(target)
        edges[module] = found
    return edges


def layer_of(table, module):
    name = "/".join(module) or "lib"
    best = (-1, None)
    for level, prefixes in enumerate(table):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + "/")) and len(prefix) > best[0]:
                best = (len(prefix), level)
    return best[1]


def circles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def show(module):
    return "::".join(module) or "lib"


def report(src: Path, check: bool) -> int:
    edges = graph(src)
    table = LAYERS.get(str(src))
    problems = []
    print(f"# {src}: {len(edges)} modules, {sum(len(t) for t in edges.values())} dependencies between them")
    for module in sorted(edges):
        level = layer_of(table, module) if table else None
        targets = ", ".join(show(t) for t in sorted(edges[module])) or "-"
        if not check:
            print(f"  {'L' + str(level) if level is not None else '  '} {show(module):28} -> {targets}")
        if table is None:
            continue
        if level is None:
            problems.append(f"{show(module)} is in no layer of .ci/layers.py")
            continue
        for target in edges[module]:
            if module[: len(target)] == target:
                problems.append(f"{show(module)} uses {show(target)}, its own folder's mod.rs: an import up")
                continue
            other = layer_of(table, target)
            if other is not None and other > level:
                problems.append(f"{show(module)} (layer {level}) uses {show(target)} (layer {other}): an import up")
    for circle in circles(edges):
        problems.append("a circle: " + " -> ".join(show(m) for m in circle))
    for problem in problems:
        print("  VIOLATION " + problem)
    print(f"  {len(problems)} violations")
    return len(problems)


def main(argv):
    check = "--check" in argv
    roots = [a for a in argv if not a.startswith("--")] or list(LAYERS)
    failed = sum(report(Path(root), check) for root in roots)
    return 1 if failed and check else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
