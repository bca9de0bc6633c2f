"""docs/configs.md against the code: every row of its key tables names a key of
ppmobilenet.config.SCHEMA with the types, allowed values, range and default the schema has, every
schema key has its row, and the default transforms shown are the ones the code fills in. Also
`python -m ppmobilenet.config`, which the page shows."""
import math
import os
import re
import subprocess
import sys

import pytest
import yaml

from ppmobilenet.config import SCHEMA, load_config, schema_keys, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS_MD = os.path.join(ROOT, "docs", "configs.md")
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


def parse_type(cell):
    """'int >= 1' | 'str, null' | '`a`, `b`' | 'list of 3 ints > 0' | 'float in [0, 1)' ... ->
    (types, allowed, bound, length). bound: (op, number) or ('in', lo, hi, lo_closed, hi_closed)."""
    allowed = tuple(re.findall(r"`([^`]+)`", cell))
    rest = re.sub(r"`[^`]+`(, )?", "", cell).strip(" ,")
    types, bound, length = ({"str"} if allowed else set()), None, None
    # 'int in [0, 10]', 'int in [0, 10], null', 'list of float in [0, 10]',
    # 'list of 3 ints: 3, then in [16, 4096]' (Global.image_shape: C is 3, H and W bounded)
    interval = re.fullmatch(r"(list of (?:(\d+) )?)?(int|float)s?(: 3, then)? in ([\[(])([-\d.e+]+), "
                            r"([-\d.e+]+)([\])])(, null)?", rest)
    parts = [rest] if interval else [p.strip() for p in rest.split(",") if p.strip()]
    for p in parts:
        if interval:
            kind = interval.group(3)
            types.add(f"list[{kind}]" if interval.group(1) else kind)
            types |= {"null"} if interval.group(9) else set()
            length = int(interval.group(2)) if interval.group(2) else None
            bound = ("in", float(interval.group(6)), float(interval.group(7)),
                     interval.group(5) == "[", interval.group(8) == "]", bool(interval.group(4)))
            continue
        m = re.fullmatch(r"(int|float|str|bool|null)(?: (>=|>) ([\d.]+))?", p)
        lm = re.fullmatch(r"list of (?:(\d+) )?(int|float|str)s?(?: (>=|>) ([\d.]+))?", p)
        if m:
            types.add(m.group(1))
            bound = (m.group(2), float(m.group(3))) if m.group(2) else bound
        elif lm:
            types.add(f"list[{lm.group(2)}]")
            length = int(lm.group(1)) if lm.group(1) else None
            bound = (lm.group(3), float(lm.group(4))) if lm.group(3) else bound
        elif p == "transform list":
            types.add("transforms")
        else:
            raise AssertionError(f"docs/configs.md: cannot read the type {cell!r}")
    return types, allowed, bound, length


def probes(types, bound, length):
    """(value, should the schema's check accept it) pairs that pin the documented range down."""
    integer = bool({"int", "list[int]"} & types)
    step, num = (1, int) if integer else (1e-6, float)
    cases = []
    if bound and bound[0] in (">=", ">"):
        edge = num(bound[1])
        inside, outside = (edge, edge - step) if bound[0] == ">=" else (edge + step, edge)
        cases += [(inside, True), (outside, False)]
    elif bound:
        _, lo, hi, lo_in, hi_in, _rgb = bound
        lo, hi = num(lo), num(hi)
        cases += [(lo, lo_in), (hi, hi_in), (num((lo + hi) / 2), True), (lo - step, False), (hi + step, False)]
    if bound and bound[0] == "in" and bound[5]:   # C, H, W: C is 3, the range bounds H and W
        return [([3, v, v], ok) for v, ok in cases] + [([1, lo, lo], False), ([3, lo], False)]
    if any(t.startswith("list[") for t in types):
        cases = [([v] * (length or 1), ok) for v, ok in cases]
        if length:
            fine = cases[0][0][0] if cases else num(1)
            cases += [([fine] * length, True), ([fine] * (length - 1), False), ([fine] * (length + 1), False)]
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
    types, allowed, bound, length = parse_type(type_cell)
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
    checks = probes(types, bound, length)
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
