"""docs/configs.md against the code: every row of its key tables names a key of
ppmobilenet.config.SCHEMA with the types, allowed values, range and default the schema has, every
schema key has its row, the default transforms shown are the ones the code fills in, and the
config errors its Bounds section prints are the ones the code gives. Also
`python -m ppmobilenet.config`, which the page shows. Across every page: each test a page names
as proof exists, and each link to a section of a page finds that section."""
import glob
import math
import os
import re
import subprocess
import sys

import pytest
import yaml

from ppmobilenet.config import SCHEMA, ConfigError, load_config, schema_keys, validate_config
from ppmobilenet.engine.run_folder import claim_output_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS_MD = os.path.join(ROOT, "docs", "configs.md")
PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]
ROW = re.compile(r"^\| (`[A-Za-z][\w.]*`(?: / `[\w.]+`)?) \| ([^|]+) \| ([^|]+) \|")


def spec_of(dotted):
    node = SCHEMA
    for part in dotted.split("."):
        node = node[part]
    return node


def documented_rows():
    """[(key, type cell, default cell, line number)], one per key (Train / Eval rows split)."""
    rows = []
    with open(CONFIGS_MD, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            m = ROW.match(line)
            if not m:
                continue
            keys = re.findall(r"`([\w.]+)`", m.group(1))
            defaults = [d.strip() for d in m.group(3).split(" / ")] if len(keys) == 2 else [m.group(3).strip()]
            if len(defaults) == 1:
                defaults *= len(keys)
            rows += [(k, m.group(2).strip(), d, number) for k, d in zip(keys, defaults)]
    return rows


ROWS = documented_rows()


NUM = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
SHAPE = re.compile(rf"list of 3 ints: `?(\d+)`?, then (?:H and W )?in \[({NUM}), ({NUM})\]")


def parse_type(cell):
    """'int in [1, 100]' | 'str, null' | '`a`, `b`' | 'list of int >= 1' | 'float > 0' ... ->
    (types, allowed, bound, shape). bound: (">=" | ">", number) or ("in", lo, hi, lo_closed,
    hi_closed); shape: (channels, lo, hi) for Global.image_shape's rule."""
    shape = SHAPE.fullmatch(cell)
    if shape:
        return {"list[int]"}, (), None, tuple(float(g) for g in shape.groups())
    allowed = tuple(re.findall(r"`([^`]+)`", cell))
    rest = re.sub(r"`[^`]+`(, )?", "", cell).strip(" ,")
    types, bound = ({"str"} if allowed else set()), None
    interval = re.search(rf"((?:list of )?(?:int|float)s?) in ([\[(])({NUM}), ({NUM})([\])])", rest)
    if interval:
        bound = ("in", float(interval.group(3)), float(interval.group(4)),
                 interval.group(2) == "[", interval.group(5) == "]")
        rest = rest.replace(interval.group(0), interval.group(1))
    for p in [p.strip() for p in rest.split(",") if p.strip()]:
        m = re.fullmatch(rf"(int|float|str|bool|null)(?: (>=|>) ({NUM}))?", p)
        lm = re.fullmatch(rf"list of (int|float|str)s?(?: (>=|>) ({NUM}))?", p)
        if m:
            types.add(m.group(1))
            bound = (m.group(2), float(m.group(3))) if m.group(2) else bound
        elif lm:
            types.add(f"list[{lm.group(1)}]")
            bound = (lm.group(2), float(lm.group(3))) if lm.group(2) else bound
        elif p == "transform list":
            types.add("transforms")
        else:
            raise AssertionError(f"docs/configs.md: cannot read the type {cell!r}")
    return types, allowed, bound, None


def probes(types, bound, shape, default):
    """(value, should the schema's check accept it) pairs that pin the documented range down:
    both ends and just outside them, and a huge value where only a lower end is documented
    (an undocumented upper end fails). A list varies its default's last item."""
    integer = bool({"int", "list[int]"} & types)
    step, num, huge = (1, int, 10 ** 9) if integer else (1e-6, float, 1e30)
    if shape:
        c, lo, hi = (int(x) for x in shape)
        return [([c, lo, lo], True), ([c, hi, hi], True), ([c, lo - 1, lo], False),
                ([c, lo, hi + 1], False), ([c + 1, lo, lo], False), ([c, lo], False), ([c, lo, lo, lo], False)]
    cases = []
    if bound and bound[0] in (">=", ">"):
        edge = num(bound[1])
        inside, outside = (edge, edge - step) if bound[0] == ">=" else (edge + step, edge)
        cases += [(inside, True), (outside, False), (huge, True)]
    elif bound:
        _, lo, hi, lo_in, hi_in = bound
        lo, hi = num(lo), num(hi)
        cases += [(lo, lo_in), (hi, hi_in), (lo - step, False), (hi + step, False)]
        if integer and hi - lo >= 2 or not integer:
            cases.append((num((lo + hi) / 2), True))
    if any(t.startswith("list[") for t in types):
        base = list(default[:-1]) if isinstance(default, list) and default else []
        cases = [(base + [v], ok) for v, ok in cases]
    return cases


def parse_default(cell):
    """'`1`' | '`null` = ...' | 'required' | 'see below' -> ("value", v) | ("required",) | ("below",)."""
    if cell == "required":
        return ("required",)
    if cell == "see below":
        return ("below",)
    m = re.match(r"`([^`]*)`", cell)
    assert m, f"docs/configs.md: cannot read the default {cell!r}"
    return ("value", yaml.safe_load(m.group(1)))


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


def test_every_schema_key_has_one_row_and_every_row_a_key():
    documented = [k for k, *_ in ROWS]
    assert sorted(documented) == sorted(set(documented)), "a key documented twice"
    assert set(documented) == set(schema_keys()), (
        f"undocumented: {sorted(set(schema_keys()) - set(documented))}; "
        f"not in the schema: {sorted(set(documented) - set(schema_keys()))}")


@pytest.mark.parametrize("key, type_cell, default_cell, line", ROWS, ids=[r[0] for r in ROWS])
def test_row_matches_the_schema(key, type_cell, default_cell, line):
    spec = spec_of(key)
    where = f"docs/configs.md:{line} ({key})"
    types, allowed, bound, shape = parse_type(type_cell)
    assert types == set(spec.types), f"{where}: types {sorted(types)}, the schema says {spec.types}"
    assert allowed == (spec.allowed or ()), f"{where}: values {allowed}, the schema allows {spec.allowed}"
    kind = parse_default(default_cell)
    if kind[0] == "required":
        assert spec.required, f"{where}: documented as required, the schema has a default"
    else:
        assert not spec.required, f"{where}: the schema requires it"
        if kind[0] == "value":
            assert same(kind[1], spec.default), f"{where}: default {kind[1]!r}, the schema's {spec.default!r}"
        else:
            assert "transforms" in spec.types, f"{where}: 'see below' for a key without a list below"
    checks = probes(types, bound, shape, spec.default)
    assert bool(checks) == (spec.check is not None), \
        f"{where}: the page gives {'a' if checks else 'no'} range, the schema {'has' if spec.check else 'has no'} check"
    for value, accepted in checks:
        problem = spec.check(value)
        assert (problem is None) == accepted, \
            f"{where}: {value!r} is {'in' if accepted else 'outside'} the documented range, the schema says {problem!r}"


def test_default_transforms_shown_are_the_code_defaults():
    text = open(CONFIGS_MD, encoding="utf-8").read()
    block = re.search(r"Default transforms.*?```yaml\n(.*?)```", text, re.S)
    assert block, "docs/configs.md: no default transforms block"
    shown = yaml.safe_load(block.group(1))["DataLoader"]
    for mode in ("Train", "Eval"):
        code = SCHEMA["DataLoader"][mode]["transforms"].default
        assert same(shown[mode]["transforms"], code), (mode, shown[mode]["transforms"], code)
    # and they are what a config that names none gets
    cfg = validate_config({"Global": {"epochs": 1}, "Arch": {"name": "mobilenet_v1", "class_num": 10}})
    for mode in ("Train", "Eval"):
        assert same(cfg["DataLoader"][mode]["transforms"], shown[mode]["transforms"]), mode


def test_python_m_ppmobilenet_config_prints_the_resolved_config(tmp_path):
    """docs/configs.md: `python -m ppmobilenet.config -c configs/demo.yaml -o Global.seed=1`
    prints the config resolved (what load_config returns); a bad key is a config error."""
    demo = os.path.join(ROOT, "configs", "demo.yaml")
    r = subprocess.run([sys.executable, "-m", "ppmobilenet.config", "-c", demo, "-o", "Global.seed=1",
                        "Arch.scale=0.5"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    printed = yaml.safe_load(r.stdout)
    assert printed == load_config(demo, ["Global.seed=1", "Arch.scale=0.5"])
    assert printed["Global"]["seed"] == 1 and printed["Arch"]["scale"] == 0.5
    r = subprocess.run([sys.executable, "-m", "ppmobilenet.config", "-c", demo, "-o", "Global.epoh=3"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "unknown key 'Global.epoh' in -o Global.epoh=3; did you mean 'Global.epochs'?" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_config_errors_the_bounds_section_prints_are_the_codes(tmp_path):
    """Each `config error:` line of the Bounds section, from the -o option it names (or, for
    Global.output_dir, from a real file in its place), is the message the code gives."""
    text = open(CONFIGS_MD, encoding="utf-8").read()
    block = re.search(r"^## Bounds\n.*?```\n(.*?)```", text, re.S | re.M)
    assert block, "docs/configs.md: no error block in the Bounds section"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) >= 5 and all(ln.startswith("config error: ") for ln in lines), lines
    demo = os.path.join(ROOT, "configs", "demo.yaml")
    for line in lines:
        shown = line[len("config error: "):]
        option = re.search(r" in -o (\S+): ", shown)
        if option:
            with pytest.raises(ConfigError) as e:
                load_config(demo, [option.group(1)])
        else:
            folder = re.match(r"Global.output_dir=(\S+) is a file", shown)
            assert folder, f"docs/configs.md: cannot tell where {line!r} comes from"
            os.makedirs(tmp_path / os.path.dirname(folder.group(1)), exist_ok=True)
            (tmp_path / folder.group(1)).write_text("notes\n")
            cwd = os.getcwd()
            os.chdir(tmp_path)            # the page's path is relative, as a user types it
            try:
                with pytest.raises(ConfigError) as e:
                    claim_output_dir(folder.group(1))
            finally:
                os.chdir(cwd)
        assert str(e.value) == shown, (line, str(e.value))


def _tests_defined():
    names = set()
    for path in glob.glob(os.path.join(ROOT, "tests", "*.py")):
        names.add(os.path.basename(path)[:-3])
        names.update(re.findall(r"^def (test_\w+)", open(path, encoding="utf-8").read(), re.M))
    return names


def test_every_test_a_page_names_exists():
    """A promise 'proven by test_x' must point at a test that runs (a renamed test leaves the
    promise unproven)."""
    defined = _tests_defined()
    missing = [f"{os.path.relpath(page, ROOT)}: {name}" for page in PAGES
               for name in sorted(set(re.findall(r"\b(test_\w+?)(?:\.py)?\b", open(page, encoding="utf-8").read())))
               if name not in defined]
    assert not missing, missing


def _anchor(heading):
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_to_a_section_finds_it():
    anchors = {}
    for page in PAGES:
        text = re.sub(r"```.*?```", "", open(page, encoding="utf-8").read(), flags=re.S)
        anchors[os.path.realpath(page)] = {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([\w./-]*)#([\w-]+)\)", open(page, encoding="utf-8").read()):
            path = os.path.realpath(os.path.join(os.path.dirname(page), target) if target else page)
            if anchor not in anchors.get(path, set()):
                broken.append(f"{os.path.relpath(page, ROOT)}: ({target}#{anchor})")
    assert not broken, broken
