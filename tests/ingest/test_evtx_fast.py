"""`_evtx_fast.fields_of` against the general path it stands in for:
`EvtxJsonShape.fields(orjson.loads(text))`.

Wherever it reads a record it must give exactly the general path's fields (names, order, values and their
types); wherever the general path fails it must give up (None). It must also read the common records, or the
hunt would silently lose its speed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from evtx import PyEvtxParser

from casefile.hunt.evaluate import EventView
from casefile.hunt.vector import _joined_values
from casefile.ingest.shapes.evtx_json import EvtxJsonShape

fast = pytest.importorskip(
    "casefile.ingest.shapes._evtx_fast", reason="no compiled build of _evtx_fast (no C compiler at install)"
)


def _typed(value: Any) -> Any:
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


def _reference(text: str) -> list[tuple[str, Any]] | None:
    try:
        data = orjson.loads(text)
        if not isinstance(data, dict):
            return None
        fields = EvtxJsonShape.fields(data)
    except Exception:
        return None
    return [(k, _typed(v)) for k, v in fields.items()]


def _check(text: str) -> bool:
    """Asserts that the fast reader gives the reference's fields or gives up, and that its keyword text (if
    any) is what the gate may read (`_check_keyword_text`); whether it read the text."""
    utf8 = text.encode("utf-8", "surrogatepass")
    from_utf8 = fast.fields_of(utf8)  # the same from the text's UTF-8, as the hunt's reader gives it
    kw_utf8 = fast.keyword_text(from_utf8) if from_utf8 is not None else None
    got = fast.fields_of(text)
    if got is None:
        assert from_utf8 is None, text
        return False
    assert [(k, _typed(v)) for k, v in got.items()] == _reference(text), text
    assert from_utf8 is not None and [(k, _typed(v)) for k, v in from_utf8.items()] == _reference(text)
    kw = fast.keyword_text(got)
    assert kw_utf8 == kw
    _check_keyword_text(got, kw)
    assert fast.layout_key(got) == "\0".join(got)
    KEYWORD_TEXTS.append(kw is not None)
    return True


#: Per record `_check` read, whether it had a keyword text.
KEYWORD_TEXTS: list[bool] = []


def _check_keyword_text(fields: dict[str, Any], kw: bytes | None) -> None:
    """The keyword text, if any, is every value the hunt joins for its keyword scan, integers included, each
    after a NUL, in UTF-8 with its ASCII letters lower-cased, and none holding the two characters whose lower
    case holds an ASCII letter (`test_only_two_characters_lower_into_ascii`): so an ASCII word lies in it
    wherever it lies in the joined values. A 0 written `-0` stays so, which holds the `0` the hunt writes."""
    joined = _joined_values(EventView(fields), True)
    if kw is None:
        return
    parts = [p.decode() for p in kw.split(b"\0")]
    assert parts[0] == ""
    parts = parts[1:]
    assert all(p.encode() == p.encode().lower() for p in parts)  # no ASCII capital left
    assert not any("\u0130" in p or "\u212a" in p for p in parts)
    wanted = joined.split("\0") if parts else []
    assert len(parts) == len(wanted) and (parts or joined == "")
    assert all(p.lower() == j or (p, j) == ("-0", "0") for p, j in zip(parts, wanted, strict=True))


def test_only_two_characters_lower_into_ascii() -> None:
    """The premise of the keyword text (`_kw_ok` in _evtx_fast): in this Python's Unicode tables only U+0130
    and U+212A have a lower case holding an ASCII character."""
    into_ascii = [
        cp for cp in range(0x80, 0x110000)
        if not 0xD800 <= cp < 0xE000 and any(ord(ch) < 0x80 for ch in chr(cp).lower())
    ]
    assert into_ascii == [0x130, 0x212A]


DATA = '{"Image":"C:\\\\Windows\\\\cmd.exe","ProcessId":42}'


def _record(system: str, data: str = DATA) -> str:
    return (
        '{"Event":{"#attributes":{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"},'
        f'"System":{system},"EventData":{data}}}}}'
    )


SYSTEM = (
    '{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":"{5770385F-C22A-43E0}"}},'
    '"EventID":1,"Version":5,"Level":4,"Task":1,"Opcode":0,"Keywords":"0x8000000000000000",'
    '"TimeCreated":{"#attributes":{"SystemTime":"2019-07-19T14:42:51.446280Z"}},"EventRecordID":3572,'
    '"Correlation":null,"Execution":{"#attributes":{"ProcessID":2796,"ThreadID":3592}},'
    '"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"MSEDGEWIN10",'
    '"Security":{"#attributes":{"UserID":"S-1-5-18"}}}'
)

READ = {
    "sysmon": _record(SYSTEM),
    "qualifiers and #text": _record(
        '{"EventID":{"#attributes":{"Qualifiers":16384},"#text":7036},"Channel":"System"}'
    ),
    "forwarded: integers as their text": _record(
        '{"EventID":"4688","Version":"2","Execution":{"#attributes":{"ProcessID":"500","ThreadID":"x"}}}'
    ),
    "forwarded: integers as text": _record(
        '{"EventID":"4688","Version":"2","Execution":{"#attributes":{"ProcessID":"0x1f4","ThreadID":"x"}}}'
    ),
    "escapes": _record(SYSTEM, '{"CommandLine":"a \\"b\\" \\\\c\\/d\\n\\t\\r\\b\\f","Empty":""}'),
    "non-ASCII": _record(SYSTEM, '{"User":"ÉCOLE\\\\Ĳ Σ 𝔘","K":"\u212a"}'),
    "non-ASCII, U+0130": _record(SYSTEM, '{"User":"\u0130stanbul"}'),
    "non-ASCII, keyword text": _record(SYSTEM, '{"User":"ÉCOLE\\\\Ĳ Σ 𝔘 ΑΣ","Path":"C:\\\\Ünïcode\\\\é"}'),
    "integers at orjson's bounds": _record(
        SYSTEM, '{"a":18446744073709551615,"b":-9223372036854775808,"c":-0,"d":0,"e":true,"f":false,"g":null}'
    ),
    "Data #text list": _record(SYSTEM, '{"Data":{"#text":["sa"," Reason: x",""]},"Binary":"1848"}'),
    "Data #text string": _record(SYSTEM, '{"Data":{"#text":"one"}}'),
    "arrays": _record(SYSTEM, '{"List":[1,"two",null,true],"Empty":[]}'),
    "EventData null": _record(SYSTEM, "null"),
    "EventData empty": _record(SYSTEM, "{}"),
    "no EventData": '{"Event":{"System":' + SYSTEM + "}}",
    "UserData": '{"Event":{"System":' + SYSTEM + ',"UserData":{"LogFileCleared":{"#attributes":'
    '{"xmlns":"http://manifests.microsoft.com/win/2004/08/windows/eventlog","xmlns:x":"y"},'
    '"SubjectUserName":"admin01","SubjectLogonId":"0xaf855","Count":3}}}}',
    "UserData nested, attributes, #text and arrays": '{"Event":{"System":' + SYSTEM + ',"UserData":'
    '{"Op":{"#attributes":{"Mode":"A","xmlnsish":1},"Inner":{"#text":"t","#attributes":{"Kind":"k"}},'
    '"List":["a",2,null],"Deep":{"More":{"Leaf":false}},"Empty":{}}}}}',
    "UserData names taken (qualified)": '{"Event":{"System":' + SYSTEM + ',"UserData":{"X":{"Channel":"b",'
    '"UserData_A":0,"#attributes":{"A":1}},"Y":{"A":2},"Z":{"A":3}}}}',
    "UserData scalar": '{"Event":{"System":' + SYSTEM + ',"UserData":"text"}}',
    "UserData #text": '{"Event":{"System":' + SYSTEM + ',"UserData":{"#text":["a","b"]}}}',
    "whitespace": ' {\n "Event" : { "System" : { "EventID" : 4 , "Provider" : { "#attributes" : { } } } ,'
    ' "EventData" : { "A" : [ 1 , 2 ] , "B" : { "#text" : "x" } } } } \r\n',
}

GIVE_UP = {
    "\\u escape": _record(SYSTEM, '{"A":"\\u0041"}'),
    "float": _record(SYSTEM, '{"A":1.5}'),
    "exponent": _record(SYSTEM, '{"A":1e5}'),
    "wider than 64 bits": _record(SYSTEM, '{"A":18446744073709551616}'),
    "below -2**63": _record(SYSTEM, '{"A":-9223372036854775809}'),
    "element met twice": _record('{"X":{"#attributes":{"A":1}},"X":{"#attributes":{"B":2}}}'),
    "scalar met twice": _record('{"EventID":1,"EventID":2}'),
    "attribute met twice": _record('{"X":{"#attributes":{"A":1,"A":2}}}'),
    "data name met twice": _record(SYSTEM, '{"A":1,"A":2}'),
    "data name taken by System": _record(SYSTEM, '{"Version":"9.01"}'),
    # the same value object (null, small integers) where the name is taken: still taken
    "data name taken by System, both null": _record(SYSTEM, '{"Correlation":null}'),
    "data name met twice, both null": _record(SYSTEM, '{"A":null,"A":null}'),
    "data name met twice, both 1": _record(SYSTEM, '{"A":1,"A":1}'),
    "#text before #attributes": _record('{"EventID":{"#text":1,"#attributes":{"Qualifiers":0}}}'),
    "EventData #attributes": _record(SYSTEM, '{"#attributes":{"Name":"X"},"param1":"a"}'),
    "UserData key met twice": '{"Event":{"System":' + SYSTEM + ',"UserData":{"X":{"A":1},"X":{"B":2}}}}',
    "UserData attribute met twice": '{"Event":{"System":' + SYSTEM + ',"UserData":{"X":{"#attributes":'
    '{"A":1,"A":2}}}}}',
    "UserData twice": '{"Event":{"System":' + SYSTEM + ',"UserData":{"A":1},"UserData":{"B":2}}}',
    "UserData #attributes not an object": '{"Event":{"System":' + SYSTEM
    + ',"UserData":{"X":{"#attributes":1}}}}',
    "UserData attribute an object": '{"Event":{"System":' + SYSTEM
    + ',"UserData":{"X":{"#attributes":{"A":{}}}}}}',
    "UserData #text an object": '{"Event":{"System":' + SYSTEM + ',"UserData":{"X":{"#text":{"A":1}}}}}',
    "UserData too deep": '{"Event":{"System":' + SYSTEM + ',"UserData":' + '{"A":' * 9 + "1" + "}" * 9 + "}}",
    "UserData before System": '{"Event":{"UserData":{"X":{"A":"b"}},"System":' + SYSTEM + "}}",
    "RenderingInfo": '{"Event":{"System":' + SYSTEM + ',"RenderingInfo":{"Level":"Information"}}}',
    "EventData before System": '{"Event":{"EventData":{"A":1},"System":' + SYSTEM + "}}",
    "nested object": _record(SYSTEM, '{"A":{"B":1}}'),
    "nested array": _record(SYSTEM, '{"A":[[1]]}'),
    # JSON the general path refuses
    "trailing comma": _record(SYSTEM, '{"A":1,}'),
    "leading zero": _record(SYSTEM, '{"A":01}'),
    "lone minus": _record(SYSTEM, '{"A":-}'),
    "control character": _record(SYSTEM, '{"A":"a\tb"}'),
    "bad escape": _record(SYSTEM, '{"A":"\\x"}'),
    "unterminated": _record(SYSTEM)[:-3],
    "trailing text": _record(SYSTEM) + "x",
    "second top-level key": _record(SYSTEM)[:-1] + ',"B":1}',
    "lone surrogate": _record(SYSTEM, '{"A":"\ud800"}'),
    "not an object": "[1,2]",
    "no System": '{"Event":{"EventData":{"A":1}}}',
    "empty": "",
}


@pytest.mark.parametrize("name", sorted(READ))
def test_reads_common_records_as_the_general_path_does(name: str) -> None:
    assert _check(READ[name]), f"{name}: the fast reader gave up"
    # the keyword text is made unless a value holds U+0130 or U+212A or an integer was made from other text
    # than its string form
    without = ("non-ASCII", "non-ASCII, U+0130", "forwarded: integers as text")
    assert KEYWORD_TEXTS[-1] == (name not in without)


@pytest.mark.parametrize("name", sorted(GIVE_UP))
def test_gives_up_where_it_cannot_be_exact(name: str) -> None:
    assert fast.fields_of(GIVE_UP[name]) is None


def test_keyword_text_belongs_to_the_fields_just_read() -> None:
    fields = fast.fields_of(READ["sysmon"])
    assert fields is not None and fast.keyword_text(fields) is not None
    assert fast.keyword_text(dict(fields)) is None  # equal fields, not the ones read
    assert fast.fields_of(GIVE_UP["float"]) is None
    assert fast.keyword_text(fields) is None  # another record was read since
    forwarded = fast.fields_of(READ["forwarded: integers as text"])  # 500 made from "0x1f4"
    assert forwarded is not None and fast.keyword_text(forwarded) is None
    forwarded = fast.fields_of(READ["forwarded: integers as their text"])  # 4688 from "4688"
    assert forwarded is not None and forwarded["EventID"] == 4688 and fast.keyword_text(forwarded) is not None
    kelvin = fast.fields_of(READ["non-ASCII"])
    assert kelvin is not None and fast.keyword_text(kelvin) is None
    other = fast.fields_of(READ["non-ASCII, keyword text"])
    assert other is not None and fast.keyword_text(other) is not None


def test_strings_with_a_special_character_at_every_offset() -> None:
    """The reader skips eight bytes at a time through a string while none is a quote, a backslash or a control
    character: each of those, and a non-ASCII character, at every offset of the first words."""
    specials = ['\\"', "\\\\", "\\n", "é", "€", "\t", "\x01", "\x1f", "\x7f", " "]
    read = 0
    for at in range(20):
        for special in specials:
            for tail in (0, 3, 11):
                text = _record(SYSTEM, '{"A":"' + "x" * at + special + "y" * tail + '","B":"z"}')
                expected = _reference(text)
                got = _check(text)
                assert got == (expected is not None), text  # read exactly where the general path reads
                read += got
    assert read == 20 * 3 * 7  # all but the raw tab, \x01 and \x1f, which JSON refuses


def test_layout_key_is_one_object_per_layout_and_exact() -> None:
    first = fast.fields_of(READ["sysmon"])
    assert first is not None
    key = fast.layout_key(first)
    assert key == "\0".join(first)
    again = fast.fields_of(READ["sysmon"])
    assert again is not None and fast.layout_key(again) is key  # looked up without hashing the names
    assert fast.layout_key(first) is None and fast.layout_key(dict(again)) is None  # not the fields just read
    # names that differ in case only, more layouts than are remembered, some too many fields for a key
    layouts = [{"Image": 1}, {"image": 1}, {"Image": 1, "B": 2}, {"B": 2, "Image": 1}]
    layouts += [{f"F{i}": i, f"G{j}": j} for i in range(20) for j in range(20)]
    layouts.append({f"F{i}": i for i in range(300)})
    keys: list[list[str | None]] = [[], []]
    for round_keys in keys:
        for data in layouts:
            fields = fast.fields_of(_record(SYSTEM, json.dumps(data)))
            assert fields is not None
            got = fast.layout_key(fields)
            assert got == ("\0".join(fields) if len(fields) <= 256 else None)
            round_keys.append(got)
    # the second round finds most layouts remembered (some share a slot with another: about 10% of 405 in
    # 4,096 slots)
    assert sum(a is b for a, b in zip(*keys, strict=True) if a is not None) > 0.8 * len(layouts)


_PALETTE = 'aZ09 _-:\\"/\n\t\x01é€𝔘ΣK{}[],#\u0130\u212a'


def _random_string(rng: random.Random) -> str:
    return "".join(rng.choice(_PALETTE) for _ in range(rng.randint(0, 8)))


def _random_value(rng: random.Random, depth: int = 0) -> str:
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return json.dumps(_random_string(rng), ensure_ascii=rng.random() < 0.2)
    if kind == 1:
        bounds = [0, 1, -1, 2**63 - 1, -(2**63), -(2**63) - 1, 2**63, 2**64 - 1, 2**64]
        return str(rng.choice([*bounds, rng.randint(-999, 999)]))
    if kind == 2:
        return rng.choice(["1.5", "-0.0", "1e3", "2E-2"])
    if kind in (3, 4, 5):
        return rng.choice(["true", "false", "null", '"x"'])
    if kind == 6:
        return "[" + ",".join(_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))) + "]"
    return _random_object(rng, depth + 1)


def _random_key(rng: random.Random) -> str:
    names = ["A", "B", "EventID", "Version", "#text", "#attributes", "Name", "xmlns", "xmlns:a"]
    return json.dumps(rng.choice([*names, _random_string(rng)]))


def _random_object(rng: random.Random, depth: int) -> str:
    members = []
    for _ in range(rng.randint(0, 4)):
        if rng.random() < 0.3:
            value = '{"#attributes":{' + ",".join(
                f"{_random_key(rng)}:{_random_value(rng, 2)}" for _ in range(rng.randint(0, 3))
            ) + "}" + (f',"#text":{_random_value(rng, 2)}' if rng.random() < 0.5 else "") + "}"
        else:
            value = _random_value(rng, depth)
        members.append(f"{_random_key(rng)}:{value}")
    return "{" + ",".join(members) + "}"


def _mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text) + 1)
        op = rng.randrange(3)
        if op == 0:
            text = text[:at] + rng.choice(' ,:{}[]"\\0-.e') + text[at:]
        elif op == 1:
            text = text[:at] + text[at + 1:]
        else:
            text = text[:at] + " \n" + text[at:]
    return text


def test_random_records_and_mutations() -> None:
    rng = random.Random(20261124)
    read = read_user = total = 0
    for _ in range(20_000):
        system = _random_object(rng, 1) if rng.random() < 0.3 else SYSTEM
        data = rng.choice([_random_object(rng, 1), '{"A":' + _random_value(rng) + "}", "null"])
        user = rng.random() < 0.3  # UserData: leaves by their own names
        if user:
            user_data = rng.choice([data, _random_object(rng, 0)])
            text = '{"Event":{"System":' + system + ',"UserData":' + user_data + "}}"
        else:
            text = _record(system, data)
        if rng.random() < 0.3:
            text = _mutate(rng, text)
        ok = _check(text)
        read += ok
        read_user += ok and user
        total += 1
    # the generator makes many readable records: a reader that always gave up would pass the checks above
    assert read > total // 10
    assert read_user > total // 50


def test_corpus_records(shared_data: Path) -> None:
    dup = "hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES/"
    files = sorted(f for f in (shared_data / "evtx").rglob("*.evtx") if dup not in f.as_posix())
    read = total = 0
    for path in files:
        try:
            for record in PyEvtxParser(str(path)).records_json():
                assert record is not None
                read += _check(record["data"])
                total += 1
        except (OSError, RuntimeError):
            continue
    assert total > 20_000
    assert read > total * 0.98, f"read {read} of {total} corpus records"  # all but RenderingInfo and the like
    assert sum(KEYWORD_TEXTS[-read:]) > read * 0.98, "keyword texts made for too few records"
