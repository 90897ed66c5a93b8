"""The house rules, checked on the source with `ast` (lazy imports inside functions included):

- no import cycle between mlnb's modules;
- nothing outside `mlnb/cli/` imports the CLI (`mlnb.cli`) or typer/click;
- no module imports another module's private name (`from mlnb.x import _y`, or `x._y` on an imported mlnb module);
- ARCHITECTURE.md names every module, and every module it names exists.

Each check is first shown failing on a planted fake tree, then passing on `mlnb/`."""
import ast
import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {'_modidx'}  # nbdev's index of symbols, not code


def modules(pkg_dir: Path) -> dict:
    "Dotted module name -> file, for every .py under `pkg_dir` (a package's `__init__.py` is the package itself)."
    out = {}
    for f in sorted(pkg_dir.rglob('*.py')):
        parts = list(f.relative_to(pkg_dir.parent).with_suffix('').parts)
        if parts[-1] in GENERATED: continue
        if parts[-1] == '__init__': parts = parts[:-1]
        out['.'.join(parts)] = f
    return out


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    "The absolute module an ImportFrom names, relative imports resolved against `mod`."
    if not node.level: return node.module or ''
    base = mod.split('.') if is_pkg else mod.split('.')[:-1]
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def imports(pkg_dir: Path) -> list:
    """Every import in the package as (importer, imported module, name or None, line), plus private attribute uses of
    imported package modules as (importer, module, '_name', line)."""
    mods, top = modules(pkg_dir), pkg_dir.name
    out = []
    for mod, f in mods.items():
        is_pkg = f.name == '__init__.py'
        tree = ast.parse(f.read_text(encoding='utf-8'), str(f))
        alias = {}  # local name -> package module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    out.append((mod, a.name, None, node.lineno))
                    if a.name.split('.')[0] == top:
                        alias[a.asname or a.name.split('.')[0]] = a.name if a.asname else a.name.split('.')[0]
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(mod, is_pkg, node)
                for a in node.names:
                    sub = f'{src}.{a.name}'
                    if sub in mods:  # `from mlnb import track`: the module itself
                        out.append((mod, sub, None, node.lineno))
                        alias[a.asname or a.name] = sub
                    else: out.append((mod, src, a.name, node.lineno))
        for node in ast.walk(tree):  # `track._version` where `track` is an imported package module
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in alias:
                if node.attr.startswith('_') and not node.attr.startswith('__'):
                    out.append((mod, alias[node.value.id], node.attr, node.lineno))
    return out


def internal_edges(pkg_dir: Path) -> dict:
    "importer -> set of package modules it imports (an import of `a.b.c` also runs `a.b`'s `__init__`)."
    mods, edges = modules(pkg_dir), {}
    for imp, target, _name, _ in imports(pkg_dir):
        cand = target
        while cand and cand not in mods: cand = cand.rpartition('.')[0]
        if cand and cand != imp and cand != pkg_dir.name: edges.setdefault(imp, set()).add(cand)
    return edges


def cycles(pkg_dir: Path) -> list:
    "The import cycles (strongly connected components of more than one module), each sorted."
    edges, index, low, stack, on, out, n = internal_edges(pkg_dir), {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(modules(pkg_dir)):
        if v not in index: visit(v)
    return sorted(out)


def cli_imports(pkg_dir: Path) -> list:
    "`file:line imports X` for every import of the CLI package or typer/click from outside the CLI package."
    cli = f'{pkg_dir.name}.cli'
    return sorted(f'{m}:{line} imports {t}' for m, t, _, line in imports(pkg_dir)
                  if not (m == cli or m.startswith(cli + '.'))
                  and (t == cli or t.startswith(cli + '.') or t.split('.')[0] in ('typer', 'click')))


def private_imports(pkg_dir: Path) -> list:
    "`importer:line uses module._name` for every private name taken from another package module."
    top = pkg_dir.name
    return sorted(f'{m}:{line} uses {t}.{name}' for m, t, name, line in imports(pkg_dir)
                  if name and name.startswith('_') and not name.startswith('__') and t.split('.')[0] == top and t != m)


def architecture_names(doc: Path, top: str = 'mlnb') -> set:
    "Modules and subpackages named in backticks in ARCHITECTURE.md (`mlnb.x`, `mlnb.x.y`)."
    names = re.findall(rf'`({top}(?:\.[a-z_][a-z0-9_]*)+)`', doc.read_text(encoding='utf-8'))
    return {n for n in names if n.rpartition('.')[2] not in FILE_SUFFIXES}  # `mlnb.yaml` is a file, not a module


FILE_SUFFIXES = {'yaml', 'yml', 'json', 'db', 'ini', 'md', 'toml', 'txt', 'ipynb'}


def architecture_problems(pkg_dir: Path, doc: Path) -> list:
    "Modules ARCHITECTURE.md does not name, and names in it that are no module."
    mods = set(modules(pkg_dir)) - {pkg_dir.name}
    named = architecture_names(doc, pkg_dir.name)
    missing = sorted(mods - named)
    unknown = sorted(n for n in named if n not in mods)
    return [f'not in ARCHITECTURE.md: {m}' for m in missing] + [f'ARCHITECTURE.md names no module: {n}' for n in unknown]


# -- the checks fail on a planted tree --

def _fake_tree(tmp_path: Path) -> Path:
    pkg = tmp_path/'fake'
    files = {
        '__init__.py': '',
        'a.py': 'def f():\n    from fake import b  # a lazy import is an import too\n    return b\n',
        'b.py': 'from .a import f\n',
        'cli/__init__.py': 'import typer\nclass Fail(Exception): pass\n',
        'feature.py': 'def go():\n    from fake.cli import Fail\n    raise Fail()\n',
        'uses_typer.py': 'import typer\n',
        'helper.py': 'def _secret(): return 1\n',
        'thief.py': 'from fake.helper import _secret\nfrom fake import helper\nx = helper._secret()\n',
    }
    for name, src in files.items():
        (pkg/name).parent.mkdir(parents=True, exist_ok=True)
        (pkg/name).write_text(src)
    (tmp_path/'ARCH.md').write_text('`fake.a` `fake.b` `fake.cli` `fake.feature` `fake.gone`\n')
    return pkg


def test_checks_fail_on_a_planted_tree(tmp_path):
    pkg = _fake_tree(tmp_path)
    assert cycles(pkg) == [['fake.a', 'fake.b']]
    assert cli_imports(pkg) == ['fake.feature:2 imports fake.cli', 'fake.uses_typer:1 imports typer']
    assert private_imports(pkg) == ['fake.thief:1 uses fake.helper._secret', 'fake.thief:3 uses fake.helper._secret']
    probs = architecture_problems(pkg, tmp_path/'ARCH.md')
    assert 'not in ARCHITECTURE.md: fake.helper' in probs and 'ARCHITECTURE.md names no module: fake.gone' in probs


def test_checks_pass_on_a_clean_tree(tmp_path):
    pkg = tmp_path/'clean'
    pkg.mkdir()
    (pkg/'__init__.py').write_text('')
    (pkg/'a.py').write_text(textwrap.dedent('''
        import os
        def public(): return os.sep
    '''))
    (pkg/'b.py').write_text('from clean.a import public\n')
    assert (cycles(pkg), cli_imports(pkg), private_imports(pkg)) == ([], [], [])


# -- and pass on mlnb --

PKG = ROOT/'mlnb'


def test_no_import_cycles():
    assert cycles(PKG) == [], 'import cycles: ' + '; '.join(' <-> '.join(c) for c in cycles(PKG))


def test_library_does_not_import_the_cli():
    assert cli_imports(PKG) == [], 'the library imports the CLI:\n' + '\n'.join(cli_imports(PKG))


def test_no_private_names_cross_modules():
    assert private_imports(PKG) == [], 'private names used across modules:\n' + '\n'.join(private_imports(PKG))


def test_architecture_names_every_module():
    probs = architecture_problems(PKG, ROOT/'ARCHITECTURE.md')
    assert probs == [], '\n'.join(probs)
