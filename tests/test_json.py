"""fastquant's JSON reader (the core's, built on jiter) against Python's `json` module on many inputs: the same
documents are accepted, with the same values (types, key order, repeated keys, NaN/Infinity, huge integers,
lone surrogates), and the same documents are refused. Floats are written as Python's `repr` writes them."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastquant as fq
from fastquant import _core

METHOD = "json-test-not-built-in"


class _Echo(fq.QuantizationConfigMixin):
    """A registered config class whose from_dict hands back the dict it was given: through it the core's
    parse of a JSON text comes back to Python unchanged."""

    @classmethod
    def from_dict(cls, config_dict, return_unused_kwargs=False, **kwargs):
        return config_dict


@pytest.fixture(autouse=True, scope="module")
def _echo_method():
    fq.register_quantization_config(METHOD)(_Echo)
    yield
    del fq.AUTO_QUANTIZATION_CONFIG_MAPPING[METHOD]


def ours(doc_text: str):
    """Parse `doc_text` with the core (as the value of a config dict of the echo method): returns the value,
    or the exception."""
    try:
        result = _core.config_from_json('{"quant_method": "%s", "v": %s}' % (METHOD, doc_text))
    except ValueError as e:
        return e
    assert isinstance(result, dict) and result["quant_method"] == METHOD
    return result["v"]


def theirs(doc_text: str):
    try:
        return json.loads('{"quant_method": "%s", "v": %s}' % (METHOD, doc_text))["v"]
    except ValueError as e:  # JSONDecodeError, or int too long to convert
        return e


def canon(v):
    """A rendering that tells apart what == would not (1 vs 1.0 vs True, -0.0, NaN, key order)."""
    return json.dumps(v, ensure_ascii=True)


def assert_same(doc_text: str):
    a, b = ours(doc_text), theirs(doc_text)
    if isinstance(b, Exception):
        assert isinstance(a, Exception), f"{doc_text!r}: Python refuses ({b}), fastquant gave {a!r}"
        return
    assert not isinstance(a, Exception), f"{doc_text!r}: Python reads {b!r}, fastquant refused: {a}"
    assert canon(a) == canon(b), doc_text


# Strings with anything in them, lone surrogates included (Python's json writes those as \udXXX escapes).
texts = st.text(alphabet=st.characters(blacklist_categories=()), max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)


def render(v, draw) -> str:
    """JSON text for a value tree, with random spacing, escaping and repeated object keys."""
    sp = draw(st.sampled_from(["", " ", "\n", "\t ", "\r\n"]))
    if isinstance(v, list):
        return "[" + sp + ("," + sp).join(render(x, draw) for x in v) + sp + "]"
    if isinstance(v, tuple):  # an object, as a list of pairs (keys may repeat)
        return "{" + ",".join(f"{sp}{json.dumps(k)}{sp}:{sp}{render(x, draw)}" for k, x in v) + sp + "}"
    ascii_only = draw(st.booleans())
    try:
        return json.dumps(v, ensure_ascii=ascii_only)
    except UnicodeEncodeError:
        return json.dumps(v)


trees = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4)
    | st.lists(st.tuples(st.sampled_from(["a", "b", "c", "é", "\ud800x", ""]), kids), max_size=4).map(tuple),
    max_leaves=12,
)


@st.composite
def documents(draw):
    return render(draw(trees), draw)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_valid_documents_read_as_python_reads_them(text):
    if not _encodable(text):  # a raw lone surrogate cannot be passed as UTF-8 text at all
        return
    assert_same(text)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    documents(),
    st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from(list('0123456789.eE+-,:[]{}" \\u/ntfNIa'))),
        min_size=1,
        max_size=3,
    ),
    st.data(),
)
def test_broken_documents_are_refused_as_python_refuses_them(text, edits, data):
    for pos, ch in edits:
        pos = min(pos, len(text))
        if data.draw(st.booleans()):
            text = text[:pos] + ch + text[pos:]
        else:
            text = text[:pos] + text[pos + 1 :]
    if not _encodable(text):
        return
    assert_same(text)


@pytest.mark.parametrize(
    "text",
    [
        "01",
        "1.",
        ".5",
        "+1",
        "-",
        "1e",
        "1.e3",
        "0x1",
        "00",
        "-01",
        "1_000",
        "inf",
        "-NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "NaN",
        "1e400",
        "-1e-400",
        "-0",
        "-0.0",
        "1E+2",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
        '"\\ud800"',
        '"\\udc00"',
        '"a\\ud83d"',
        '"\\ud83d\\ude00"',
        '"\\ud800\\u0041"',
        '"\\u12"',
        '"\\x41"',
        '"\x01"',
        '"\x7f"',
        "[1,]",
        "[,1]",
        '{"a":1,}',
        '{"a" 1}',
        "{1:2}",
        "[1 2]",
        "tru",
        "nul",
        "  [ ]  ",
        "[]x",
        "\ufeff1",
        "1 2",
        "",
        '{"k": 1, "k": 2}',
        '{"k": 1, "j": 0, "k": {"x": 1, "x": [2]}}',
        '"\\/\\b\\f\\n\\r\\t\\"\\\\"',
    ],
)
def test_edge_cases_match_python(text):
    assert_same(text)


def test_repeated_keys_last_wins_in_first_place():
    assert list(ours('{"b": 1, "a": 2, "b": 3}').items()) == [("b", 3), ("a", 2)]


def test_lone_surrogates_and_huge_integers_are_kept_exactly():
    v = ours('{"s": "\\ud800", "n": 123456789012345678901234567890, "ok": [1.5]}')
    assert v == {"s": "\ud800", "n": 123456789012345678901234567890, "ok": [1.5]}


def test_a_lone_surrogate_in_a_config_key_is_a_clear_error():
    with pytest.raises(ValueError, match="top-level key holds a lone UTF-16 surrogate"):
        fq.DiffusersAutoQuantizer.from_json_string('{"quant_method": "quanto", "\\ud800": 1}')


def test_nesting_cap_and_error_location():
    # The wrapper object adds one level: 63 more arrays are the most accepted.
    assert ours("[" * 63 + "]" * 63) == json.loads("[" * 63 + "]" * 63)
    e = ours("[" * 64 + "]" * 64)
    assert isinstance(e, ValueError) and "nested too deeply" in str(e)
    with pytest.raises(ValueError, match=r"QuantoConfig: invalid JSON at byte 32: invalid number"):
        fq.QuantoConfig.from_json_string('{"weights_dtype": "int8", "x": 01}')


def test_registered_methods_get_the_parsed_dict():
    # from_json_string of a registered method hands the dict parsed once to its config class's from_dict.
    d = fq.DiffusersAutoQuantizer.from_json_string('{"quant_method": "%s", "a": [1, 2.0]}' % METHOD)
    assert d == {"quant_method": METHOD, "a": [1, 2.0]}
    with pytest.raises(fq.ConfigError, match="unknown quant_method 'sdnq'"):
        fq.DiffusersAutoQuantizer.from_json_string('{"quant_method": "sdnq"}')


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=0, allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e16, 1e15, 1.5e-7, 1e-4, 1e-5, 5e-324, 1.7976931348623157e308, 123456789012345680.0])
)
def test_floats_are_written_as_python_repr(f):
    cfg = fq.BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=f)
    assert f"llm_int8_threshold={f!r}" in repr(cfg)
    assert f'"llm_int8_threshold": {json.dumps(f)}' in cfg.to_json_string()
    assert fq.BitsAndBytesConfig.from_json_string(cfg.to_json_string()).llm_int8_threshold == f
