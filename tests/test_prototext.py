"""The fast prototxt reader gives protobuf's own result: the oracle is
``google.protobuf.text_format.Parse``, the parser it replaces.

Every text is read three ways and compared byte for byte (deterministic
serialization): protobuf's parser, our fast path line by line and our fast path
statement by statement (the fast path alone, so a fallback cannot hide a
difference).  Texts the fast path does not take must fall back, and then bad
text raises exactly protobuf's error.
"""

from __future__ import annotations

import random

import pytest
from conftest import SHARED
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor

from pynetbuilder import models, prototext
from pynetbuilder import solver as sv
from pynetbuilder.errors import UsageError
from pynetbuilder.graph import prototxt_files
from pynetbuilder.inspect import read_prototxt
from pynetbuilder.schema import caffe_pb2, parse_net

NET = caffe_pb2.NetParameter
FIXTURES = sorted((SHARED / "fixtures" / "prototxt").glob("*.prototxt"))


def protobuf_bytes(text: str, message_type=NET) -> bytes:
    message = message_type()
    text_format.Parse(text, message)
    return message.SerializePartialToString(deterministic=True)


def fast_bytes(text: str, message_type=NET, *, by: str = "") -> bytes:
    """Our fast path alone (raises prototext._FallbackError where it would fall back):
    as ``parse`` runs it, or only line by line, or only statement by statement."""
    descriptor = message_type.DESCRIPTOR
    if by == "line":
        wire = prototext._encode(text.split("\n"), descriptor, prototext._Compiler().line)
    elif by == "statement":
        wire = prototext._encode(prototext._STATEMENT.findall(text), descriptor,
                                 prototext._Compiler().statement)
    else:
        wire = prototext._wire(text, descriptor)
    return message_type.FromString(wire).SerializePartialToString(deterministic=True)


def assert_fast_and_identical(text: str, message_type=NET, *, by_line: bool = False) -> None:
    expected = protobuf_bytes(text, message_type)
    assert fast_bytes(text, message_type) == expected
    assert fast_bytes(text, message_type, by="statement") == expected
    if by_line:  # one statement a line, as protobuf and Caffe write: the quickest way
        assert fast_bytes(text, message_type, by="line") == expected
    parsed = prototext.parse(text, message_type())
    assert parsed.SerializePartialToString(deterministic=True) == expected


def outcome(parse, text: str, message_type=NET):
    """The serialized message, or the exception's type, text and position."""
    try:
        message = parse(text, message_type())
    except Exception as exc:  # noqa: BLE001 - any exception must be protobuf's own
        where = (exc.GetLine(), exc.GetColumn()) if isinstance(exc, text_format.ParseError) \
            else None
        return type(exc), str(exc), where
    return message.SerializePartialToString(deterministic=True)


# ------------------------------------------------------------------ real files


@pytest.fixture(scope="module")
def zoo_texts() -> dict[str, str]:
    """train/test/deploy prototxt of every family's named configurations."""
    texts = {}
    for family in models.list():
        for label, knobs in models.FAMILIES[family].references.items():
            for name, text in prototxt_files(models.build(family, **knobs)).items():
                texts[f"{family} {label} {name}"] = text
    return texts


def test_the_published_fixtures_read_fast_and_identical():
    assert len(FIXTURES) == 3
    for path in FIXTURES:
        assert_fast_and_identical(path.read_text(), by_line=True)


def test_every_zoo_net_reads_fast_and_identical(zoo_texts):
    assert len(zoo_texts) >= 100
    for name, text in zoo_texts.items():
        expected = protobuf_bytes(text)
        assert fast_bytes(text, by="line") == expected, name
        assert fast_bytes(text, by="statement") == expected, name


def test_solvers_read_fast_and_identical():
    read = 0
    for name in sv.RECIPES:
        try:
            s = sv.solver_parameter(sv.recipe(name), net="train.prototxt", train_size=50_000,
                                    test_size=10_000, snapshot_prefix="snap/x", random_seed=7)
        except UsageError:  # a recipe Caffe cannot run
            continue
        assert_fast_and_identical(sv.solver_text(s), caffe_pb2.SolverParameter, by_line=True)
        read += 1
    assert read >= 5


def test_the_library_reads_through_it(tmp_path):
    text = FIXTURES[0].read_text()
    expected = protobuf_bytes(text)
    assert parse_net(text).SerializePartialToString(deterministic=True) == expected
    (tmp_path / "net.prototxt").write_text(text)
    assert read_prototxt(tmp_path / "net.prototxt").SerializePartialToString(deterministic=True) \
        == expected


# ------------------------------------------------------------------ edge cases

V1 = """name: "v1"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 32 input_dim: 32
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 0
  convolution_param { num_output: 8 kernel_size: 5 stride: 1 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "pool" type: POOLING bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layers { name: "fc" type: 14 bottom: "pool" top: "fc"
  inner_product_param { num_output: 10 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""

V1_ONE_PER_LINE = """layers {
  name: "conv"
  type: CONVOLUTION
  blobs_lr: 1.0
  weight_decay: 0
  include {
    phase: TRAIN
  }
}
"""

EDGE_CASES = {
    "V1 layers": V1,
    "V1 layers, one statement a line": V1_ONE_PER_LINE,
    "empty": "",
    "blank lines and comments": "\n  # a comment { with \"quotes\n\n# another\n",
    "comments everywhere": '# head\nname: "x" # after a value\nlayer { # after {\n'
                           '  name: "a#b" # a hash inside a string\n} # after }\n',
    "no final newline": 'name: "x"',
    "tabs, CRLF, form feed, unicode space": 'name:\t"x"\r\nlayer {\f name: "a"\u00a0}\r\n',
    "non-ASCII strings": 'name: "résumé 网络"\nlayer { name: "ß" }',
    "escapes": r'name: "q\"uote \\ back \n nl \t \x41 \101 \' \u00e9"',
    "single quotes": "name: 'it\"s'\nlayer { name: 'a' type: \"b\" }",
    "adjacent strings": 'name: "a" "b" \'c\'\nlayer { name: "x"\n  "y" }\n'
                        'layer { name: "x" \'y\' }\nlayer { name: \'x\' "y" }\n'
                        'layer { name: "x" \'y\' top: \'t\' "u" }',
    "list syntax": 'input: ["a", "b"]\ninput_dim: [1, 3, 224, 224]\n'
                   'layer { bottom: [] top: ["t1" "t2", # comment ]\n "t3"] }',
    "colon before {": 'layer: { name: "a" param: { lr_mult: 1 } }',
    "angle brackets": 'layer < name: "a" convolution_param < num_output: 2 > >',
    "separators": 'name: "a"; layer { name: "b", type: "c"; bottom: "d" },\n'
                  'layer { name: "e" };\nforce_backward: true,',
    "a value after a comment": 'layer {\n  name: # "x"\n  "y"\n  top: # "t"\n  "z" }',
    "a list across lines": 'input_dim: [1,\n 2]\ninput_dim: 3',
    "many statements on a line": 'layer { name: "a" type: "b" } layer { name: "c" }',
    "statement across lines": 'layer\n{\n name\n :\n "a"\n param\n {\n lr_mult\n :\n 2 } }',
    "floats": 'layer { param { lr_mult: 1e-4 decay_mult: .5 } param { lr_mult: -inf '
              'decay_mult: nan } param { lr_mult: 1f decay_mult: 2.5F } param { lr_mult: '
              '-.5e+3 decay_mult: inf } param { lr_mult: -Infinity decay_mult: 1E10 } '
              'param { lr_mult: 3.4e38 decay_mult: 1e-45 } param { lr_mult: 16777217 '
              'decay_mult: -0 } param { lr_mult: 0.1 decay_mult: 1. } }',
    "float edge values": 'layer { loss_weight: [3.4028235e38, 3.4028236e38, 1.4e-45, 7e-46, '
                         '2.5e-46, -nanf, infinityf, 0.30000000000000004, 1e-7, 123456789] }',
    "doubles and packed fields": 'layer { blobs { double_data: 1.5 double_data: [2, 3e300] '
                                 'data: 1 data: [2, 3] shape { dim: [1, 2] dim: -3 } } }',
    "hex and octal integers": 'layer { convolution_param { num_output: 0x10 kernel_size: 0X1f '
                              'pad: 017 stride: 0 axis: -0x1 group: 00 } }',
    "negative integers": 'layer { convolution_param { axis: -1 } reshape_param { num_axes: -1 '
                         'axis: -2147483648 } }',
    "enums by name and by number": 'layer { pooling_param { pool: MAX engine: 2 } '
                                   'include { phase: TEST } exclude { phase: 0 } }\n'
                                   'state { phase: TRAIN level: 3 stage: "s" }',
    "bools in every spelling": 'force_backward: t\ndebug_info: False\nlayer { propagate_down: '
                               '[true, false, True, False, t, f, 1, 0] }',
    "empty messages": 'layer {}\nlayer { convolution_param {} param {} }\nstate <>',
    "deeply nested": 'layer { convolution_param { weight_filler { type: "gaussian" std: 0.01 '
                     '} bias_filler { type: "constant" value: 0.2 } } }',
    "required fields, set or not": 'layer { psroi_pooling_param { spatial_scale: 0.5 '
                                   'output_dim: 2 } pixelshuffle_param {} '
                                   'unsqueeze_param { dim: 1 } }',
    "in-place layers, repeated names": 'layer { name: "a" top: "a" }\nlayer { name: "a" '
                                       'top: "a" bottom: "a" }',
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_read_fast_and_identical(case):
    assert_fast_and_identical(EDGE_CASES[case])


def test_other_message_types_read_fast_and_identical():
    assert_fast_and_identical('data: "\\001\\377\\000raw" "é" channels: 3 label: -1 encoded: true '
                              'float_data: [0.5, -2]', caffe_pb2.Datum)
    assert_fast_and_identical('net_param { name: "inner" layer { name: "a" } } base_lr: 0.1 '
                              'random_seed: -9223372036854775808 test_iter: [1, 2] '
                              'solver_mode: CPU', caffe_pb2.SolverParameter)


# ------------------------------------------------------------------ fallback and errors

# Valid text the fast path leaves to protobuf.
FALLS_BACK_AND_READS = {
    "a list of messages": 'layer [{ name: "a" }, { name: "b" }]\nlayer: [{ name: "c" }]',
}

# Bad text: protobuf's error, word for word, with its line and column.
BAD = {
    "unknown field": 'layer {\n  name: "a"\n  nonsense: 1\n}',
    "unknown top-level field": "foo: 1",
    "string for a number": 'layer { convolution_param { num_output: "8" } }',
    "number for a string": "name: 5",
    "bad bool": "force_backward: maybe",
    "bad float": "layer { param { lr_mult: 1.2.3 } }",
    "octal float": "layer { param { lr_mult: 01.5 } }",
    "float for an int": "layer { convolution_param { num_output: 1.5 } }",
    "negative unsigned": "layer { convolution_param { num_output: -1 } }",
    "uint32 out of range": "layer { convolution_param { num_output: 4294967296 } }",
    "int32 out of range": "layer { convolution_param { axis: 2147483648 } }",
    "int64 out of range": "random_seed: 9223372036854775808",
    "unknown enum name": "layer { pooling_param { pool: MAXIMUM } }",
    "unknown enum number": "layer { pooling_param { pool: 7 } }",
    "duplicate singular field": 'name: "a"\nname: "b"',
    "duplicate singular message": "state { phase: TRAIN }\nstate { level: 1 }",
    "duplicate in a nested message": "layer { convolution_param { axis: 1 axis: 2 } }",
    "missing }": 'layer {\n  name: "a"\n',
    "extra }": 'layer { name: "a" } }',
    "mismatched < }": 'layer < name: "a" }',
    "unterminated string": 'name: "abc\nlayer {}',
    "invalid UTF-8 in a string": r'name: "\377"',
    "scalar without colon": 'name "a"',
    "message as a scalar": "layer: 5",
    "scalar as a message": "name { }",
    "extension syntax": "[foo.bar]: 1",
    "list for a singular field": 'name: ["a"]',
    "missing value": "name:",
    "two separators": 'name: "a";;',
    "separator after {": "layer {; }",
    "value glued to a name": "layer { convolution_param { num_output: 1b } }",
    "number as a field name": "1: 2",
    "a value commented out": 'layer {\n  name: # "x"\n  top: "t"\n}',
    "stray character": 'name: "a" @',
    "stray quote": 'name: "a"\n"',
    "a list of messages with a bad one": 'layer [{ name: "a" }, { bad: 1 }]',
}


@pytest.mark.parametrize("case", sorted(FALLS_BACK_AND_READS))
def test_valid_text_outside_the_fast_path_falls_back(case):
    text = FALLS_BACK_AND_READS[case]
    with pytest.raises(prototext._FallbackError):
        prototext._wire(text, NET.DESCRIPTOR)
    assert prototext.parse(text, NET()).SerializePartialToString(deterministic=True) == \
        protobuf_bytes(text)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_text_raises_protobufs_error(case):
    text = BAD[case]
    with pytest.raises(prototext._FallbackError):
        prototext._wire(text, NET.DESCRIPTOR)
    ours, theirs = outcome(prototext.parse, text), outcome(text_format.Parse, text)
    assert isinstance(theirs, tuple), "protobuf reads this text: not a bad case"
    assert ours == theirs


def test_read_prototxt_names_file_line_and_column(tmp_path):
    """A syntax error names file, line and column (an unknown field is not one: the
    forks' dialects may define it; see tests/test_dialects.py)."""
    path = tmp_path / "bad.prototxt"
    path.write_text('layer {\n  name: "a"\n  top: "a" @\n}\n')
    with pytest.raises(Exception, match=r"bad.prototxt:3:12: not a valid Caffe prototxt "
                                        r"\(line 3, column 12: .*Expected identifier or "
                                        r"number, got @"):
        read_prototxt(path)


def test_a_message_that_is_not_empty_is_merged_by_protobuf():
    def named():
        return NET(name="x")

    for text in ('layer { name: "b" }', 'name: "again"'):
        assert outcome(prototext.parse, text, named) == outcome(text_format.Parse, text, named)


def test_bytes_are_left_to_protobuf():
    text = b'name: "x" layer { name: "\xc3\xa9" }'
    assert outcome(prototext.parse, text) == outcome(text_format.Parse, text)


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")  # both parsers
def test_random_damage_gives_protobufs_outcome():
    """Characters deleted, inserted and replaced, lines repeated, at random in real
    text: whatever protobuf makes of the result (a message or an error), ours is the
    same."""
    rng = random.Random(11)
    resnet = FIXTURES[0].read_text()
    bases = [
        resnet[:resnet.index("layer {", 3000)],  # one statement a line
        "\n".join([EDGE_CASES["comments everywhere"], EDGE_CASES["floats"],
                   V1.replace('name: "v1"', ""), EDGE_CASES["enums by name and by number"],
                   EDGE_CASES["colon before {"], EDGE_CASES["angle brackets"],
                   "layer { " + EDGE_CASES["escapes"] + " }"]),
    ]
    alphabet = '{}<>[]:;,"\'#\\ \n\t-+.0123456789eExXfnaibtT_'
    readable = broken = 0
    for _ in range(800):
        text = rng.choice(bases)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(text) + 1)
            action = rng.choice("dirl")
            if action == "d":
                text = text[:i] + text[i + 1:]
            elif action == "i":
                text = text[:i] + rng.choice(alphabet) + text[i:]
            elif action == "r":
                text = text[:i] + rng.choice(alphabet) + text[i + 1:]
            else:
                lines = text.split("\n")
                lines.insert(rng.randrange(len(lines)), rng.choice(lines))
                text = "\n".join(lines)
        expected = outcome(text_format.Parse, text)
        assert outcome(prototext.parse, text) == expected, text
        readable += isinstance(expected, bytes)
        broken += not isinstance(expected, bytes)
    assert readable > 50 and broken > 50  # both kinds were tried


# Random text of the schema: every field type, written every way text format allows.
FLOATS = ["0", "1", "-1", "0.5", ".5", "-.25", "1e-4", "1E10", "3.4e38", "3.5e38", "1e-45",
          "2.5f", "1F", "inf", "-inf", "nan", "Infinity", "-infinityf", "16777217", "1."]
STRINGS = ['"a"', "'b'", '"with space"', '"x" "y"', "'q\\'s'", '"esc\\n\\t\\\\"', '"\\x41\\101"',
           '"é"', '""', '"#not a comment"', '"{}<>;,:"']
INT_RANGES = {FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1),
              FieldDescriptor.TYPE_INT64: (-2**63, 2**63 - 1),
              FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
              FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1)}


def random_value(field, rng: random.Random) -> str:
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return rng.choice(STRINGS)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return rng.choice(["true", "false", "True", "False", "t", "f", "1", "0"])
    if field.type == FieldDescriptor.TYPE_ENUM:
        value = rng.choice(field.enum_type.values)
        return rng.choice([value.name, str(value.number)])
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return rng.choice(FLOATS)
    low, high = INT_RANGES[field.type]
    n = rng.choice([0, 1, 8, low, high, rng.randint(low, high)])
    if n > 0 and rng.random() < 0.2:
        return rng.choice([hex(n), "0" + oct(n)[2:]])
    return str(n)


def random_text(descriptor, rng: random.Random, depth: int = 0) -> str:
    def gap() -> str:
        return rng.choice([" ", " ", "\n", "\n  ", "\t", " # c {\"'\n", "\r\n", ""])

    fields = [f for f in descriptor.fields if f.message_type is None or depth < 3]
    statements = []
    for _ in range(rng.randint(0, 6) if fields else 0):
        f = rng.choice(fields)
        if f.message_type is not None:
            opener, closer = rng.choice(["{}", "{}", "<>"])
            statements.append(f"{f.name}{rng.choice(['', '', ':'])}{gap()}{opener}{gap()}"
                              f"{random_text(f.message_type, rng, depth + 1)}{closer}")
        elif f.is_repeated and rng.random() < 0.3:
            items = [random_value(f, rng) for _ in range(rng.randint(0, 3))]
            statements.append(f"{f.name}:{gap()}[{(',' + gap()).join(items)}]")
        else:
            statements.append(f"{f.name}:{gap()}{random_value(f, rng)}")
        statements[-1] += rng.choice(["", "", "", ";", ","]) + rng.choice(["\n", "\n", " "])
    return "".join(statements)


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
def test_random_text_of_the_schema_reads_fast_and_identical():
    """Random statements of every field of the nets' and solvers' messages: protobuf
    reads most (a repeated singular field or a float out of range is its error), and
    ours gives the same, by the fast path wherever protobuf reads the text."""
    rng = random.Random(5)
    read = 0
    for _ in range(2000):
        message_type = rng.choice([NET, NET, caffe_pb2.SolverParameter])
        text = random_text(message_type.DESCRIPTOR, rng)
        expected = outcome(text_format.Parse, text, message_type)
        assert outcome(prototext.parse, text, message_type) == expected, text
        if isinstance(expected, bytes):
            assert fast_bytes(text, message_type) == expected, text
            read += 1
    assert read > 1000
