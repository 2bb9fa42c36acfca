"""A contract type for import-linter that its built-in ones lack: no import cycle between modules.

``.importlinter`` declares it (``contract_types``). ``acyclic_siblings`` forbids cycles between the
children of each package; it does not see a package's ``__init__`` and one of its own modules importing
each other (``runtime/__init__.py`` importing ``runtime/restorer.py``, which imports a name from
``runtime/__init__.py``), which Python resolves only by import order. This contract takes every module of
the package, ``__init__`` files included, every import counted (those inside functions too, as
import-linter reads them), and fails on each strongly connected component of more than one module,
printing one cycle of it with the line of each import.
"""

from __future__ import annotations

from importlinter import Contract, ContractCheck, fields, output


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative).

    Args:
        graph: module -> the modules it imports.

    Returns:
        Each component's modules, sorted; the components in discovery order.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        work = [(start, iter(sorted(graph[start])))]
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


class AcyclicModulesContract(Contract):
    """``type = acyclic_modules``: no cycle among the modules of ``packages`` (and their descendants)."""

    type_name = "acyclic_modules"
    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph, verbose: bool) -> ContractCheck:
        roots = list(self.packages)  # type: ignore[arg-type]
        mods = {m for m in graph.modules if any(m == r or m.startswith(r + ".") for r in roots)}
        edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in mods and i != m} for m in mods}
        found = []
        for comp in cycles(edges):
            first = comp[0]
            second = min(i for i in edges[first] if i in comp)
            back = graph.find_shortest_chain(importer=second, imported=first)
            path = [first, *back]
            lines = []
            for a, b in zip(path, path[1:]):
                details = graph.get_import_details(importer=a, imported=b)
                lines.append(f"{a} -> {b} (l.{details[0]['line_number']})" if details else f"{a} -> {b}")
            found.append({"modules": comp, "cycle": lines})
        return ContractCheck(kept=not found, metadata={"cycles": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for c in check.metadata["cycles"]:
            output.print_error(f"Import cycle among {', '.join(c['modules'])}:")
            for line in c["cycle"]:
                output.print_error(f"- {line}", bold=False)
            output.new_line()
