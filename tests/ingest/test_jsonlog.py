"""The streaming JSON reader: layouts, damage, and records larger than its read block."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from casefile.ingest.plugins import WarningSink
from casefile.ingest.readers import jsonlog
from casefile.ingest.readers.jsonlog import JsonReader
from casefile.models import IngestWarning


def _read(text: str | bytes) -> tuple[list[tuple[int, dict[str, object]]], list[IngestWarning]]:
    data = text.encode() if isinstance(text, str) else text
    warnings: list[IngestWarning] = []
    records = [(r.index, r.data) for r in JsonReader().read(io.BytesIO(data), "t.json", warnings.append)]
    return records, warnings


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}\n{"a": 2}\n{"a": 3}\n',  # NDJSON
        '{"a": 1}\r\n{"a": 2}\r\n{"a": 3}',  # CRLF, no final newline
        '[{"a": 1}, {"a": 2}, {"a": 3}]',  # array on one line
        '[\n  {"a": 1},\n  {"a": 2}\n]\n[\n  {"a": 3}\n]\n',  # several arrays
        '{"a": 1}{"a": 2} {"a": 3}',  # concatenated without separators
        '{"a": 1},\n{"a": 2},\n{"a": 3}\n',  # objects separated by commas
        '\ufeff{"a": 1}\n{"a": 2}\n{"a": 3}',  # UTF-8 BOM
    ],
)
def test_layouts(text: str) -> None:
    records, warnings = _read(text)
    assert [r for _, r in records] == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert warnings == []


def test_concatenated_pretty_printed_objects_report_their_first_line() -> None:
    text = '{\n  "a": 1,\n  "b": {\n    "c": 2\n  }\n}\n{\n  "a": 3\n}\n'
    records, warnings = _read(text)
    assert records == [(1, {"a": 1, "b": {"c": 2}}), (7, {"a": 3})]
    assert warnings == []


def test_utf16_with_bom() -> None:
    records, _ = _read('[{"k": "Ünïcode"}]'.encode("utf-16"))
    assert records == [(1, {"k": "Ünïcode"})]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-32"])
def test_utf16_and_utf32_without_a_bom_or_with_utf32s(codec: str) -> None:
    """Without a mark, the NULs around the first character name the encoding (read as UTF-8, the whole file
    was one "invalid JSON" warning); "utf-32" writes UTF-32's mark, which begins with UTF-16's."""
    text = '{"k": "Ünïcode"}\n{"k": 2}\n'
    records, warnings = _read(text.encode(codec))
    assert records == [(1, {"k": "Ünïcode"}), (2, {"k": 2})] and warnings == []
    assert JsonReader().sniff(text.encode(codec)[:64], "x.log") == 80


def test_invalid_utf8_stays_visible() -> None:
    records, _ = _read(b'{"k": "bad \xff byte"}\n')
    assert records == [(1, {"k": "bad \\xff byte"})]


def test_bad_lines_are_skipped_with_their_line_number() -> None:
    text = '{"a": 1}\n{"a": 2,, }\nnot json at all\n{"a": 3}\n[1, 2]\n"text"\n{"a": 4'
    records, warnings = _read(text)
    assert [r for _, r in records] == [{"a": 1}, {"a": 3}]
    assert [(w.record, w.reason) for w in warnings] == [
        (2, "invalid JSON at line 2 column 9: Expecting property name enclosed in double quotes; "
            "record skipped, resumed at line 4"),
        (5, "JSON value is a int, not an object; skipped"),
        (5, "JSON value is a int, not an object; skipped"),
        (6, "JSON value is a str, not an object; skipped"),
        (7, "invalid JSON at line 7 column 8: Expecting ',' delimiter; record skipped, resumed at line 7"),
    ]
    assert {w.file for w in warnings} == {"t.json"}


def test_damaged_pretty_printed_object_resumes_at_next_object() -> None:
    text = '{\n  "a": 1\n}\n{\n  "a": 2\n  "b": 3\n}\n{\n  "a": 4\n}\n'
    records, warnings = _read(text)
    assert records == [(1, {"a": 1}), (8, {"a": 4})]
    assert [(w.record, w.reason) for w in warnings] == [
        (4, "invalid JSON at line 6 column 3: Expecting ',' delimiter; record skipped, resumed at line 8"),
    ]


def test_unclosed_array_is_reported() -> None:
    records, warnings = _read('[{"a": 1},\n{"a": 2}')
    assert [r for _, r in records] == [{"a": 1}, {"a": 2}]
    assert [(w.record, w.reason) for w in warnings] == [(2, "JSON array not closed: file truncated?")]


def test_records_larger_than_the_read_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonlog, "READ_SIZE", 64)
    big = "x" * 5000
    lines = [json.dumps({"n": i, "blob": big if i % 2 else "small", "u": "é" * 40}) for i in range(20)]
    text = "\n".join(lines) + "\n{broken\n" + json.dumps({"n": 20})
    records, warnings = _read(text)
    assert [r["n"] for _, r in records] == list(range(21))
    assert records[3] == (4, {"n": 3, "blob": big, "u": "é" * 40})
    assert [(w.record, w.reason) for w in warnings] == [
        (21, "invalid JSON at line 21 column 2: Expecting property name enclosed in double quotes; "
             "record skipped, resumed at line 22"),
    ]


def test_a_record_longer_than_the_bound_is_skipped_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressed bomb of one line took memory in proportion to the line (1.3 GB in `casefile hunt` for a
    600 kB zip): past MAX_RECORD_CHARS the record is skipped, and reading goes on at the next record."""
    monkeypatch.setattr(jsonlog, "READ_SIZE", 256)
    monkeypatch.setattr(jsonlog, "MAX_RECORD_CHARS", 4096)
    longest = 0
    real_fill = jsonlog._Buffer.fill

    def fill(self: jsonlog._Buffer, size: int = 0) -> bool:
        nonlocal longest
        grew = real_fill(self, size)
        longest = max(longest, len(self.text))
        return grew

    monkeypatch.setattr(jsonlog._Buffer, "fill", fill)
    fits = json.dumps({"n": 2, "blob": "y" * 3000})
    text = '{"n": 1}\n{"n": "' + "x" * 100_000 + '"}\n' + fits + "\n"
    records, warnings = _read(text)
    assert [r["n"] for _, r in records] == [1, 2]
    ((line, reason),) = [(w.record, w.reason) for w in warnings]
    assert line == 2 and "record longer than 4,096 characters; record skipped, resumed at line 3" in reason
    assert longest < 3 * 4096  # never the whole line


def test_huge_single_line_array_is_streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonlog, "READ_SIZE", 1024)
    text = json.dumps([{"n": i, "pad": "p" * 100} for i in range(3000)])

    class Stream(io.BytesIO):
        max_read = 0

        def read(self, size: int | None = -1) -> bytes:
            Stream.max_read = max(Stream.max_read, size or 0)
            return super().read(size)

        def read1(self, size: int | None = -1) -> bytes:
            Stream.max_read = max(Stream.max_read, size or 0)
            return super().read1(size)

    warnings: list[IngestWarning] = []
    reader = JsonReader()
    count = 0
    for record in reader.read(Stream(text.encode()), "big.json", warnings.append):
        assert record.data["n"] == count
        count += 1
    assert count == 3000 and warnings == []
    assert Stream.max_read == 1024  # read block by block, never the whole 350 kB at once


def test_sniff() -> None:
    reader = JsonReader()
    assert reader.sniff(b'  \n{"a":1}', "x.log") == 80
    assert reader.sniff(b"[", "x") == 80
    assert reader.sniff(b"garbage", "events.ndjson") == 40
    assert reader.sniff(b"garbage", "notes.txt") == 0


_RECORDS = [
    {"n": i, "s": "x" * (i * 7 % 300), "u": "é☃" * (i % 20), "nested": {"a": [1, 2, {"b": "}{"}]}}
    for i in range(120)
]
_LAYOUTS = {
    "ndjson": "\n".join(json.dumps(r, ensure_ascii=False) for r in _RECORDS),
    "pretty": "\n".join(json.dumps(r, indent=2, ensure_ascii=False) for r in _RECORDS),
    "array": json.dumps(_RECORDS, indent=1, ensure_ascii=False),
    "array-one-line": json.dumps(_RECORDS, ensure_ascii=False),
}


@pytest.mark.parametrize("read_size", [1, 7, 100, 4096])
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_block_boundaries_never_change_the_records(
    monkeypatch: pytest.MonkeyPatch, read_size: int, layout: str
) -> None:
    monkeypatch.setattr(jsonlog, "READ_SIZE", read_size)
    records, warnings = _read(_LAYOUTS[layout])
    assert [r for _, r in records] == _RECORDS
    assert warnings == []


@pytest.mark.parametrize("read_size", [1, 13, 4096])
def test_damage_between_blocks_skips_only_the_damaged_records(
    monkeypatch: pytest.MonkeyPatch, read_size: int
) -> None:
    monkeypatch.setattr(jsonlog, "READ_SIZE", read_size)
    lines = [json.dumps(r, ensure_ascii=False) for r in _RECORDS]
    damaged = {5, 40, 41, 119}
    for i in damaged:
        lines[i] = lines[i][: len(lines[i]) // 2]  # cut in the middle
    records, warnings = _read("\n".join(lines))
    assert [r["n"] for _, r in records] == [i for i in range(120) if i not in damaged]
    assert [w.record for w in warnings] == [i + 1 for i in sorted(damaged)]


def test_hostile_nesting_is_skipped_not_a_crash() -> None:
    deep = '{"x":' * 100_000 + "1" + "}" * 100_000
    records, warnings = _read('{"a": 1}\n' + deep + '\n{"a": 2}\n' + "[" * 50_000 + "]" * 50_000 + "\n")
    assert [r for _, r in records] == [{"a": 1}, {"a": 2}]
    assert [(w.record, w.reason) for w in warnings] == [
        (2, "invalid JSON at line 2 column 1: nested too deeply; record skipped, resumed at line 3"),
    ]


def test_integer_longer_than_python_reads_is_skipped_not_a_crash() -> None:
    # `int` refuses decimal text beyond sys.get_int_max_str_digits() (4300) with a plain ValueError
    huge = "1" + "0" * 5000
    text = '{"a": 1}\n{"EventID": ' + huge + '}\n{"a": 2}\n{"b": [' + huge + ']}\n{"a": 3}\n'
    records, warnings = _read(text)
    assert [r for _, r in records] == [{"a": 1}, {"a": 2}, {"a": 3}]
    reason = (
        "invalid JSON at line {} column 1: integer longer than 4300 digits; "
        "record skipped, resumed at line {}"
    )
    assert [(w.record, w.reason) for w in warnings] == [(2, reason.format(2, 3)), (4, reason.format(4, 5))]


def test_huge_record_is_joined_once_not_copied_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record of N blocks grows the buffer in doubling steps, each joined once: appending block by block
    copied the whole buffer per block, and a 600 MB line (a 600 kB gzip) took minutes."""
    monkeypatch.setattr(jsonlog, "READ_SIZE", 64)
    fills = 0
    fill = jsonlog._Buffer.fill

    def counted(self: jsonlog._Buffer, *size: int) -> bool:
        nonlocal fills
        fills += 1
        return fill(self, *size)

    monkeypatch.setattr(jsonlog._Buffer, "fill", counted)
    blob = "x" * 200_000  # 3125 blocks
    records, warnings = _read('{"a": 1}\n{"blob": "' + blob + '"}\n{"a": 2}\n')
    assert [r for _, r in records] == [{"a": 1}, {"blob": blob}, {"a": 2}]
    assert warnings == []
    assert fills < 40  # about log2(3125) growth steps, not one per block


def test_bad_lines_are_decoded_near_the_front_of_the_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """json counts the lines before a decode error, so an error's cost grows with its offset in the buffer:
    a file of bad lines (one error per line, up to 1 MiB into the block) took a minute per 2 MB. The text
    before a bad record is dropped, so every error is found within a few kB of the buffer's front."""
    offsets: list[int] = []
    skip_bad = JsonReader._skip_bad

    def spied(buf: jsonlog._Buffer, exc: json.JSONDecodeError, source: str, on_warning: WarningSink) -> None:
        offsets.append(exc.pos)
        skip_bad(buf, exc, source, on_warning)

    monkeypatch.setattr(JsonReader, "_skip_bad", staticmethod(spied))
    records, warnings = _read('{"a": 1}\n' + "{bad\n" * 50_000 + '{"a": 2}\n')
    assert [r for _, r in records] == [{"a": 1}, {"a": 2}]
    assert len(warnings) == 50_000 and warnings[-1].record == 50_001
    assert max(offsets) < 2 * jsonlog._KEEP_CONSUMED  # not up to the 250 kB the file holds


def test_a_file_lists_its_first_warnings_and_counts_the_rest(tmp_path: Path) -> None:
    """A file of a million bad lines printed, and a case held, a million warnings (14 s and 750 MB for
    200,000): past MAX_FILE_WARNINGS they are counted in one last warning; the good records are read."""
    from casefile.ingest import read_events
    from casefile.ingest.pipeline import MAX_FILE_WARNINGS

    bad = MAX_FILE_WARNINGS + 250
    (tmp_path / "noisy.json").write_text(
        '{"n": 1}\n' + "{bad\n" * bad + '{"n": 2}\n', encoding="utf-8"
    )
    (tmp_path / "quiet.json").write_text("{bad\n" * 3 + '{"n": 3}\n', encoding="utf-8")
    warnings: list[IngestWarning] = []
    events = list(read_events([tmp_path], on_warning=warnings.append))
    assert [e.fields["n"] for e in events] == [1, 2, 3]
    noisy = [w for w in warnings if w.file.endswith("noisy.json")]
    assert len(noisy) == MAX_FILE_WARNINGS + 1
    first = MAX_FILE_WARNINGS
    assert noisy[-1].reason == f"250 more warnings for this file not listed (the first {first} are)"
    assert len([w for w in warnings if w.file.endswith("quiet.json")]) == 3  # counted per file


def _whole_and_in_parts(
    path: Path, parts: list[tuple[int, ...]]
) -> tuple[tuple[list[Any], list[IngestWarning]], tuple[list[Any], list[IngestWarning]]]:
    import dataclasses

    from casefile.ingest import discover, read_records

    (ev,) = discover([path])

    def read(evidence: Any) -> tuple[list[Any], list[IngestWarning]]:
        warnings: list[IngestWarning] = []
        return [(r.index, r.data) for r in read_records(evidence, warnings.append)], warnings

    whole = read(ev)
    records: list[Any] = []
    warnings: list[IngestWarning] = []
    for part in parts:
        got, said = read(dataclasses.replace(ev, part=part))
        records += got
        warnings += said
    return whole, (records, warnings)


_GOOD_LINES = [
    '{"a": 1, "s": "x}\\\\n{y"}', '{"Image": "C:\\\\Windows\\\\cmd.exe", "n": -3.5, "l": [1, {"b": null}]}',
    '{"u": "Ünïcode \\\\ud83d\\\\ude00", "e": {}}', '{}', '  {"indented": true}', '{"crlf": 1}\r',
]
# Lines the whole file's reader refuses or reads oddly: an object that swallows the next line, an array,
# a pretty-printed object's first line, values orjson refuses but `json` reads, text that is no JSON.
_ODD_LINES = [
    '{"open": 1,', '[{"in": "array"},', '{', '{"nan": NaN}', '{"wide": 123456789012345678901234567890}',
    'garbage', '{"a": 1} {"b": 2}', ']', '{"lone": "\\\\ud800"}',
]


@pytest.mark.parametrize("seed", range(40))
def test_ndjson_parts_read_as_the_whole_file(tmp_path: Path, seed: int) -> None:
    """Random NDJSON, blank lines and (in half the files) odd lines, split in parts of a few lines: read part
    by part, the records (with their line numbers) and warnings are the whole file's. Parts follow each
    other, start on their line's number before a line opening an object, and from an odd line on the rest
    is one part."""
    import random

    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(rng.randint(20, 80)):
        roll = rng.random()
        if roll < 0.1:
            lines.append(rng.choice(["", "  ", "\t\r"]))
        elif roll < 0.13 and seed % 2 and len(lines) > 15:
            lines.append(rng.choice(_ODD_LINES))
        else:
            lines.append(rng.choice(_GOOD_LINES).replace('"a": 1', f'"a": {rng.randint(0, 99)}'))
    text = "\n".join(lines) + rng.choice(["", "\n"])
    data = (b"\xef\xbb\xbf" if seed % 3 == 0 else b"") + text.encode("utf-8", "surrogatepass")
    path = tmp_path / "log.jsonl"
    path.write_bytes(data)
    if not jsonlog._one_object(data.split(b"\n")[0].removeprefix(b"\xef\xbb\xbf")):
        assert jsonlog.ndjson_parts(path, 40) is None
        return
    found = jsonlog.ndjson_parts(path, 40)
    assert found is not None
    parts: list[tuple[int, ...]] = list(found)
    assert len(parts) > 2
    assert parts[0][0] == 0 and parts[-1][1] == -1
    for (_, stop, _), (start, _, line) in itertools.pairwise(parts):
        assert start == stop and data[start:start + 1] == b"{"
        assert line == data.count(b"\n", 0, start) + 1
    odd = [i for i, line in enumerate(lines) if line in _ODD_LINES]
    if odd:  # nothing is cut after the first odd line
        assert parts[-1][2] <= odd[0] + 1
    whole, in_parts = _whole_and_in_parts(path, parts)
    assert in_parts == whole
    assert whole[0]


@pytest.mark.parametrize(
    "text",
    [
        '[{"a": 1},\n' + '{"a": 1},\n' * 40 + "]\n",  # an array
        "{\n" + '  "a": 1\n}\n' * 40,  # pretty-printed
        "\n" + '{"a": 1}\n' * 40,  # a blank first line
        '{"a": 1}\n' * 3,  # no larger than a part
        "garbage\n" + '{"a": 1}\n' * 40,
    ],
)
def test_files_not_starting_with_an_object_line_are_not_split(tmp_path: Path, text: str) -> None:
    path = tmp_path / "log.json"
    path.write_text(text, encoding="utf-8")
    assert jsonlog.ndjson_parts(path, 30) is None
    # what a compressed file's head is asked before it is unpacked to be split
    assert JsonReader().may_split(text.encode()) == (text == '{"a": 1}\n' * 3)


def test_a_file_starting_with_an_object_line_may_be_split() -> None:
    assert JsonReader().may_split(b'\xef\xbb\xbf{"a": 1}\r\n{"a": 2}\n')
    assert JsonReader().may_split(b'{"a": "' + b"x" * 100 + b'"}')  # a head that ends in the first line
    assert not JsonReader().may_split(b'{"a": "' + b"x" * (2 << 20))  # a first line longer than a part's


def test_parts_are_named_for_messages() -> None:
    from casefile.ingest.readers.evtx import EvtxReader

    assert JsonReader().part_name((0, 4096, 1)) == "lines from 1 (bytes 0..4095)"
    assert JsonReader().part_name((4096, -1, 77)) == "lines from 77 (bytes 4096..the end)"
    assert EvtxReader().part_name((256, 512)) == "chunks 256..511"
