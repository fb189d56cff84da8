"""Generates the values table of the chart's README.md from the comments in values.yaml, so it cannot drift.

    python3 deploy/helm/readme.py           # rewrite README.md
    python3 deploy/helm/readme.py --check   # fail if README.md is not what values.yaml says (run by check.py)

A `# -- text` comment (continued by plain `#` lines) documents the key below it; nested keys get dotted names.
"""
import pathlib
import sys

import yaml

CHART = pathlib.Path(__file__).parent / "realtime-hub"
BEGIN, END = "<!-- values:begin -->", "<!-- values:end -->"


def rows():
    """(key, default, description) for every documented key, in file order."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    out, path, comment = [], [], []
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and comment:
            comment.append(stripped[1:].strip())
            continue
        if not stripped or ":" not in stripped:
            comment = []
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        key = stripped.split(":", 1)[0]
        path = path[:depth] + [key]
        if comment:
            node = values
            for part in path:
                node = node[part]
            default = "`" + (yaml.safe_dump(node, default_flow_style=True, width=1000).strip().removesuffix("...").strip()) + "`"
            out.append((".".join(path), default.replace("|", "\\|"), " ".join(comment).replace("|", "\\|")))
        comment = []
    return out


def table():
    lines = ["| key | default | description |", "| --- | --- | --- |"]
    lines += [f"| `{k}` | {d} | {c} |" for k, d, c in rows()]
    return "\n".join(lines)


def render(readme):
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main():
    path = CHART / "README.md"
    current = path.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        if current != wanted:
            print("deploy/helm/realtime-hub/README.md is out of date: run python3 deploy/helm/readme.py")
            return 1
        print(f"ok: README values table matches values.yaml ({len(rows())} keys)")
        return 0
    path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
