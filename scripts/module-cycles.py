#!/usr/bin/env python3
"""Lists the import cycles between the modules of Rust crates.

    scripts/module-cycles.py               every crate of this repository
    scripts/module-cycles.py DIR [DIR...]  the crates of these package directories

A module is one source file (an inline `mod tests { ... }` counts as its file). Module A
imports module B when A names B, or an item B defines, through a `crate::`, `super::` or
`self::` path: in a `use` declaration or anywhere in the code (comments, strings and doc
links do not count). A name re-exported with `pub use` counts as the module that defines
it, so `use crate::Limiter` imports `limiter`, not the crate root. A module and its own
submodules may name each other (a `mod.rs` re-exports its children, a child uses its
parent's types): only imports between modules that do not contain one another are edges.

A cycle is a set of modules each reachable from the others. Each one found is printed with
the imports that close it, and the exit status is 1; with none, it prints one line per crate
and exits 0. Each crate root is checked on its own: `src/lib.rs`, `src/main.rs`,
`src/bin/*.rs` and `src/bin/*/main.rs`.
"""

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text):
    """The code of `text` with comments, strings and character literals blanked out."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (i == 0 or not re.match(r"\w", text[i - 1])):
            end = text.find('"' + m.group(1), m.end())
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and (m := re.compile(r"'(\\.[^']*|[^\\'])'").match(text, i)):
            i = m.end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """The paths of a `use` tree, each with the name it binds: `a::{b, c::{d as e}}` is
    `a::b` (`b`) and `a::c::d` (`e`)."""
    tree = re.sub(r"\s*(::|\{|\}|,)\s*", r"\1", re.sub(r"\s+", " ", tree.strip()))
    paths = []

    def walk(prefix, text):
        depth, start, parts = 0, 0, []
        for k, ch in enumerate(text):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(text[start:k])
                start = k + 1
        parts.append(text[start:])
        for part in parts:
            if not part:
                continue
            brace = part.find("{")
            if brace >= 0:
                walk(prefix + part[:brace].rstrip(":").split("::"), part[brace + 1 : part.rindex("}")])
            else:
                path, _, alias = part.partition(" as ")
                segments = [s for s in (prefix + path.split("::")) if s]
                paths.append((segments, alias or segments[-1]))

    walk([], tree)
    return paths


class Crate:
    def __init__(self, root):
        self.root = root
        self.files = {}  # module path (tuple) -> file
        self.children = {}  # module path -> set of child names
        self.reexports = {}  # module path -> {name: the path it re-exports}
        self.load((), root)

    def load(self, module, path):
        self.files[module] = path
        self.children.setdefault(module, set())
        code = strip(path.read_text())
        self.reexports[module] = {}
        if path.name in ("mod.rs", "lib.rs", "main.rs"):
            directory = path.parent
        else:
            directory = path.parent / path.stem
        for m in re.finditer(r"(?m)^\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", code):
            name = m.group(1)
            for candidate in (directory / f"{name}.rs", directory / name / "mod.rs"):
                if candidate.exists():
                    self.children[module].add(name)
                    self.load(module + (name,), candidate)
                    break
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code):
            for segments, bound in expand_use(m.group(1)):
                self.reexports[module][bound] = segments

    def resolve(self, at, segments, depth=0):
        """The module that defines what `segments`, named in module `at`, name."""
        if depth > 20:
            return at
        if not segments:
            return at
        first, rest = segments[0], segments[1:]
        if first == "crate":
            current = ()
        elif first == "super":
            current = at[:-1]
            while rest and rest[0] == "super":
                current, rest = current[:-1], rest[1:]
        elif first == "self":
            current = at
        else:
            return None
        while rest:
            name = rest[0]
            if name in self.children.get(current, ()):
                current, rest = current + (name,), rest[1:]
            elif name in self.reexports.get(current, {}):
                target = self.reexports[current][name]
                if target[0] not in ("crate", "super", "self"):
                    # A re-export of a child (`pub use child::Item`) or of another crate.
                    if target[0] in self.children.get(current, ()):
                        target = ["self"] + target
                    else:
                        return current
                return self.resolve(current, target + rest[1:], depth + 1)
            else:
                break
        return current

    def imports(self):
        """Each edge (from module, to module) with the paths that make it."""
        edges = {}
        for module, path in self.files.items():
            code = strip(path.read_text())
            # Inline modules (`mod tests { ... }`): `super` inside one is relative to it.
            spans = []
            for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", code):
                depth, k = 1, m.end()
                while k < len(code) and depth:
                    depth += {"{": 1, "}": -1}.get(code[k], 0)
                    k += 1
                spans.append((m.start(), k, m.group(1)))

            def inline_at(offset):
                return tuple(name for start, end, name in sorted(spans) if start <= offset < end)

            found = []
            for m in re.finditer(r"\buse\s+([^;]+);", code):
                for segments, _ in expand_use(m.group(1)):
                    found.append((m.start(), segments))
            for m in re.finditer(r"\b(?:crate|super|self)(?:::" + IDENT + r")+", code):
                found.append((m.start(), m.group(0).split("::")))
            for offset, segments in found:
                at = module + inline_at(offset)
                target = self.resolve(at, segments)
                if target is None:
                    continue
                if target[: len(module)] == module or module[: len(target)] == target:
                    continue
                edges.setdefault((module, target), set()).add("::".join(segments))
        return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def name(module):
    return "crate" if not module else "::".join(module)


def crate_roots(package):
    src = package / "src"
    roots = [src / "lib.rs", src / "main.rs"]
    roots += sorted((src / "bin").glob("*.rs")) + sorted((src / "bin").glob("*/main.rs"))
    return [root for root in roots if root.exists()]


def main(args):
    repository = Path(__file__).resolve().parent.parent
    packages = [Path(a) for a in args] or [repository] + [
        p.parent for p in sorted(repository.glob("*/Cargo.toml")) if (p.parent / "src").is_dir()
    ]
    failed = False
    for package in packages:
        for root in crate_roots(package):
            crate = Crate(root)
            edges = crate.imports()
            found = cycles(edges)
            label = root.resolve()
            if label.is_relative_to(repository):
                label = label.relative_to(repository)
            if not found:
                print(f"{label}: {len(crate.files)} modules, {len(edges)} imports, no cycles")
                continue
            failed = True
            for component in found:
                print(f"{label}: cycle between {', '.join(name(m) for m in component)}")
                for a in component:
                    for b in component:
                        if (a, b) in edges:
                            paths = ", ".join(sorted(edges[(a, b)]))
                            print(f"    {name(a)} -> {name(b)}: {paths}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
