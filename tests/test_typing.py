"""The type information fastquant ships: `_core.pyi` and the lazily loaded names, as mypy sees them.

`tests/typing/public_api.py` must check clean; a second snippet misuses the same names and every misuse must be
reported, which could not happen if the names were `Any` to the checker. (stubtest, in scripts/lint.sh, checks
the stub against the built extension itself.)"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BAD = textwrap.dedent(
    """\
    import fastquant
    import fastquant.gguf as fg

    cfg = fastquant.BitsAndBytesConfig(load_in_4bit="yes")
    cfg.load_in_4bit = False
    fastquant.QuantoConfig(weights_dtype="int3")
    fastquant.quantize()
    fastquant.save_pretrained(1, 2, 3)
    fastquant.not_a_name
    fg.not_a_name
    fastquant.gguf.GGUFError("x").offset + 1
    reveal_type(fastquant.from_pretrained)
    reveal_type(fg.quantize_model)
    reveal_type(fastquant.NVIDIAModelOptConfig.from_dict({}, return_unused_kwargs=True))
    """
)

# line -> what mypy must say there
EXPECTED = {
    4: r'Argument "load_in_4bit" to "BitsAndBytesConfig" has incompatible type "str"; expected "bool"',
    5: r'Property "load_in_4bit" defined in "BitsAndBytesConfig" is read-only',
    6: r'Argument "weights_dtype" to "QuantoConfig" has incompatible type "Literal\[\'int3\'\]"',
    7: r'Missing positional arguments "model", "config" in call to "quantize"',
    8: r'Too many positional arguments for "save_pretrained"',
    9: r'Module has no attribute "not_a_name"',
    10: r'Module has no attribute "not_a_name"',
    11: r'Unsupported operand types for \+ \("None" and "int"\)',
    12: r"Revealed type is \"def \(cls: Any, path: Any, \*",
    13: r'Revealed type is "def \(model: Any, ',
    14: r'Revealed type is "tuple\[fastquant\._core\.NVIDIAModelOptConfig, builtins\.dict\[builtins\.str, Any\]\]"',
}


def test_public_names_check_clean_and_misuse_is_caught(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(BAD)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir"]
    cmd += [str(tmp_path / "cache"), "--no-error-summary", str(ROOT / "tests/typing/public_api.py"), str(bad)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600).stdout
    lines = out.splitlines()
    assert not [x for x in lines if "public_api.py" in x], out
    by_line: dict = {}
    for x in lines:
        m = re.match(r".*bad\.py:(\d+): (?:error|note): (.*)", x)
        assert m, x
        by_line.setdefault(int(m.group(1)), []).append(m.group(2))
    for line, want in EXPECTED.items():
        assert any(re.search(want, msg) for msg in by_line.get(line, [])), (line, want, by_line.get(line))
    assert set(by_line) == set(EXPECTED), out
