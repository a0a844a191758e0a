# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The evtx-json shape's fields read straight from a record's JSON text, for the records most EVTX files hold.

`EvtxJsonShape.fields(orjson.loads(text))` builds the record's nested objects and then flattens them; this
reads the text once, in C, into the flat fields, with the same names, values (same types) and order. It
reads only what it can read exactly, the common layout: an `Event` of `#attributes`, `System` (elements
that are scalars or `#attributes` with an optional `#text` after them), `EventData` (named scalars,
arrays of scalars, `{"#text": ...}`, or null) and `UserData` (objects of scalars, arrays of scalars and
objects, `#attributes` and `#text`), strings without `\\u` escapes and integers orjson keeps as integers.
For anything else (RenderingInfo, floats, a name met twice, a field name taken, JSON it would have to
judge) it gives up, returning None, and the caller takes the general path, which also says what is wrong
with a bad record. `tests/ingest/test_evtx_fast.py` holds it to the general path.

`keyword_text` gives what it wrote beside the fields as it read them: every value's string form, its ASCII
letters lower-cased, for the hunt's keyword gate (`vector.RecordShape.keyword_text`), which would otherwise
join them in Python. `layout_key` names the fields' names in order with one str object per layout, for the
hunt's table of folded names (`vector.RecordShape.layout_key`).

Cython proper, not Python: without a C compiler there is no build, and callers take the general path.
"""

from cpython.dict cimport PyDict_Next, PyDict_SetDefault
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DATA, PyUnicode_DecodeUTF8, PyUnicode_New
from cpython.list cimport PyList_GET_ITEM
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcmp, memcpy
from libc.stdint cimport uint64_t
from libc.stdlib cimport realloc

from casefile.ingest.shapes._common import put
from casefile.ingest.shapes.evtx_json import _SYSTEM_INTS, system_ints

cdef extern from *:
    """
    /* A dict sized for its fields from the start, without resizing as they are added (CPython 3.11 and 3.12
       export _PyDict_NewPresized; later versions hide it). */
    #if PY_VERSION_HEX < 0x030D0000
    #define casefile_dict_presized(n) _PyDict_NewPresized(n)
    #else
    #define casefile_dict_presized(n) PyDict_New()
    #endif
    """
    dict casefile_dict_presized(Py_ssize_t n)

cdef extern from *:
    """
    #if defined(__SSE2__) && defined(__GNUC__)
    #include <emmintrin.h>
    #define CASEFILE_SSE2 1
    #else
    #define CASEFILE_SSE2 0
    #endif
    /* The offset in s[0:n) of the first quote, backslash or control byte, looking 16 bytes at a time (so
       possibly short of it in the last 15: the caller reads on from there); `*high` gets the OR of the bytes
       before it. 0 without SSE2. */
    static inline Py_ssize_t casefile_scan(const char* s, Py_ssize_t n, unsigned* high) {
        Py_ssize_t i = 0;
    #if CASEFILE_SSE2
        const __m128i quote = _mm_set1_epi8(0x22), backslash = _mm_set1_epi8(0x5C), c1f = _mm_set1_epi8(0x1F);
        unsigned hb = 0;
        while (i + 16 <= n) {
            __m128i w = _mm_loadu_si128((const __m128i*)(s + i));
            __m128i bad = _mm_or_si128(_mm_cmpeq_epi8(w, quote), _mm_cmpeq_epi8(w, backslash));
            bad = _mm_or_si128(bad, _mm_cmpeq_epi8(_mm_max_epu8(w, c1f), c1f));  /* unsigned w <= 0x1F */
            unsigned mask = (unsigned)_mm_movemask_epi8(bad);
            unsigned top = (unsigned)_mm_movemask_epi8(w);
            if (mask) {
                unsigned at = (unsigned)__builtin_ctz(mask);
                hb |= top & ((1u << at) - 1);
                *high |= hb;
                return i + at;
            }
            hb |= top;
            i += 16;
        }
        *high |= hb;
    #endif
        return i;
    }
    /* n bytes from p to o, ASCII capitals lower-cased, 16 at a time; how many (a multiple of 16, 0 without
       SSE2): the caller does the rest. */
    static inline Py_ssize_t casefile_lower(const char* p, Py_ssize_t n, char* o) {
        Py_ssize_t i = 0;
    #if CASEFILE_SSE2
        const __m128i before_a = _mm_set1_epi8(0x40), after_z = _mm_set1_epi8(0x5B);  /* around A-Z */
        const __m128i bit = _mm_set1_epi8(0x20);
        while (i + 16 <= n) {
            __m128i w = _mm_loadu_si128((const __m128i*)(p + i));
            /* signed compares: bytes from 0x80 are negative, so never capitals */
            __m128i upper = _mm_and_si128(_mm_cmpgt_epi8(w, before_a), _mm_cmplt_epi8(w, after_z));
            _mm_storeu_si128((__m128i*)(o + i), _mm_add_epi8(w, _mm_and_si128(upper, bit)));
            i += 16;
        }
    #endif
        return i;
    }
    """
    enum: CASEFILE_SSE2
    Py_ssize_t casefile_scan(const char* s, Py_ssize_t n, unsigned* high) noexcept nogil
    Py_ssize_t casefile_lower(const char* p, Py_ssize_t n, char* o) noexcept nogil

cdef extern from "Python.h":
    Py_ssize_t PyDict_GET_SIZE(object d)

cdef enum:
    LAYOUTS = 4096
    LAYOUT_MAX = 256
    SLOTS = 16384
    MAX_KEYS = 48
    NAME_MAX = 256
    MAX_DEPTH = 8

cdef uint64_t _hashes[SLOTS]
cdef list _names = [None] * SLOTS
cdef char* _buf = NULL
cdef Py_ssize_t _buf_size = 0

cdef struct Cur:
    const char* s
    Py_ssize_t i
    Py_ssize_t n

cdef inline void ws(Cur* c) noexcept:
    cdef char ch
    while c.i < c.n:
        ch = c.s[c.i]
        if ch == b' ' or ch == b'\n' or ch == b'\r' or ch == b'\t':
            c.i += 1
        else:
            return

cdef inline bint expect(Cur* c, char ch) noexcept:
    ws(c)
    if c.i < c.n and c.s[c.i] == ch:
        c.i += 1
        return True
    return False

cdef inline uint64_t key_hash(const char* p, Py_ssize_t n) noexcept:
    """A hash of a name's UTF-8 from its length and its first and last 8 bytes (names are short; a
    collision costs only a decode, since a hit is checked byte for byte)."""
    cdef uint64_t a = 0, b = 0
    if n >= 8:
        memcpy(&a, p, 8)
        memcpy(&b, p + n - 8, 8)
    else:
        memcpy(&a, p, n)
    return (a * 0x9E3779B97F4A7C15ULL) ^ (b * 0xC2B2AE3D27D4EB4FULL) ^ (<uint64_t>n * 0x165667B19E3779F9ULL)


cdef object text_of(const char* p, Py_ssize_t n, bint ascii):
    """The str of UTF-8 `p[:n]`; ASCII is copied into place, without the decoder."""
    if not ascii:
        return PyUnicode_DecodeUTF8(p, n, NULL)
    s = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(s), p, n)
    return s


cdef object name_of(const char* p, Py_ssize_t n):
    """The str of UTF-8 `p[:n]`, the same object for the same text while it stays in the cache."""
    cdef uint64_t h = key_hash(p, n)
    cdef Py_ssize_t kn
    cdef const char* kp
    cdef Py_ssize_t slot = <Py_ssize_t>((h >> 40) & (SLOTS - 1))
    if _hashes[slot] == h:
        k = <object>PyList_GET_ITEM(_names, slot)
        if k is not None:
            kp = PyUnicode_AsUTF8AndSize(k, &kn)
            if kn == n and memcmp(kp, p, n) == 0:
                return k
    k = PyUnicode_DecodeUTF8(p, n, NULL)
    _names[slot] = k
    _hashes[slot] = h
    return k


cdef inline Py_ssize_t raw_key(Cur* c, Py_ssize_t* start) noexcept:
    """A string without escapes (keys): its span; -1 to give up."""
    cdef Py_ssize_t j
    cdef unsigned char ch
    ws(c)
    if c.i >= c.n or c.s[c.i] != b'"':
        return -1
    j = c.i + 1
    start[0] = j
    while j < c.n:
        ch = <unsigned char>c.s[j]
        if ch == b'"':
            c.i = j + 1
            return j - start[0]
        if ch == b'\\' or ch < 0x20:
            return -1
        j += 1
    return -1

cdef bint grow(Py_ssize_t n) except False:
    global _buf, _buf_size
    cdef char* b
    if n > _buf_size:
        b = <char*>realloc(_buf, n)
        if b == NULL:
            raise MemoryError()
        _buf, _buf_size = b, n
    return True

cdef object string(Cur* c, bint part):
    """A JSON string at the cursor as str (and, if `part`, added to the keyword text); None to give up
    (\\u escapes, control characters)."""
    cdef Py_ssize_t j, start, k, i
    cdef unsigned char ch, high = 0
    cdef bint escaped = False
    cdef uint64_t w, q, b, seen = 0
    cdef unsigned tops = 0
    if c.s[c.i] != b'"':
        return None
    j = start = c.i + 1
    if CASEFILE_SSE2:  # sixteen bytes at a time to the first quote, backslash or control character
        j += casefile_scan(c.s + j, c.n - j, &tops)
        if tops:
            high = 0x80
    else:
        # Eight bytes at a time while none is a quote, a backslash or a control character (each test flags
        # a byte's high bit, exactly for "any", since borrows start only at a flagged byte); the loop below
        # takes the word that holds one.
        while j + 8 <= c.n:
            memcpy(&w, c.s + j, 8)
            q = w ^ 0x2222222222222222ULL
            b = w ^ 0x5C5C5C5C5C5C5C5CULL
            if ((q - 0x0101010101010101ULL) & ~q | (b - 0x0101010101010101ULL) & ~b
                    | (w - 0x2020202020202020ULL) & ~w) & 0x8080808080808080ULL:
                break
            seen |= w
            j += 8
        if seen & 0x8080808080808080ULL:
            high = 0x80
    while j < c.n:
        ch = <unsigned char>c.s[j]
        high |= ch
        if ch == b'"':
            break
        if ch < 0x20:
            return None
        if ch == b'\\':
            escaped = True
            j += 2
            continue
        j += 1
    else:
        return None  # (a break leaves `j` at the closing quote, inside the text)
    c.i = j + 1
    if not escaped:
        if part:
            kw_add(c.s + start, j - start, high < 0x80)
        return text_of(c.s + start, j - start, high < 0x80)
    grow(j - start)
    k = 0
    i = start
    while i < j:
        ch = <unsigned char>c.s[i]
        if ch == b'\\':
            i += 1
            ch = <unsigned char>c.s[i]
            if ch == b'"' or ch == b'\\' or ch == b'/':
                pass
            elif ch == b'n':
                ch = b'\n'
            elif ch == b't':
                ch = b'\t'
            elif ch == b'r':
                ch = b'\r'
            elif ch == b'b':
                ch = 8
            elif ch == b'f':
                ch = 12
            else:
                return None
        _buf[k] = ch
        k += 1
        i += 1
    if part:
        kw_add(_buf, k, high < 0x80)
    return text_of(_buf, k, high < 0x80)

cdef object _GIVE_UP = object()

#: The keyword text of the record being read: each value's string form (a list's: each element's) in UTF-8,
#: its ASCII letters lower-cased, after a NUL. Python lower-cases other letters too, but only two of them
#: (U+0130, U+212A) into ASCII ones: `_kw_ok` goes false at a value holding one (the gate then reads the
#: values as the hunt joins them), so an ASCII word lies in this text wherever it lies in the lower-cased
#: joined values. `_last` is the fields it belongs to, once they are read.
cdef char* _kw = NULL
cdef Py_ssize_t _kw_size = 0
cdef Py_ssize_t _kw_len = 0
cdef bint _kw_ok = False
cdef object _last = None
#: The fields `fields_of` read last (whatever their keyword text), for `layout_key`.
cdef object _read = None
#: Layouts met (`layout_key`), by the hash of their names' identities: the names in order, and their key.
cdef uint64_t _layout_hashes[LAYOUTS]
cdef list _layout_names = [None] * LAYOUTS
cdef list _layout_keys = [None] * LAYOUTS
#: How many fields the last record read had: the next one's dict is made that large.
cdef Py_ssize_t _fields_hint = 0


cdef int kw_add(const char* p, Py_ssize_t n, bint ascii) except -1:
    global _kw, _kw_size, _kw_len, _kw_ok
    cdef char* b
    cdef Py_ssize_t j
    cdef char ch
    if not _kw_ok:
        return 0
    if not ascii:
        for j in range(n - 1):
            if (<unsigned char>p[j] == 0xC4 and <unsigned char>p[j + 1] == 0xB0) or (
                j + 2 < n and <unsigned char>p[j] == 0xE2 and <unsigned char>p[j + 1] == 0x84
                and <unsigned char>p[j + 2] == 0xAA
            ):
                _kw_ok = False
                return 0
    if _kw_len + n + 1 > _kw_size:
        b = <char*>realloc(_kw, 2 * (_kw_len + n + 1))
        if b == NULL:
            raise MemoryError()
        _kw, _kw_size = b, 2 * (_kw_len + n + 1)
    _kw[_kw_len] = 0
    _kw_len += 1
    for j in range(casefile_lower(p, n, _kw + _kw_len), n):
        ch = p[j]
        _kw[_kw_len + j] = ch + 32 if b'A' <= ch <= b'Z' else ch
    _kw_len += n
    return 0

cdef inline void restore_kw(Py_ssize_t kept) noexcept:
    """Drops what the keyword text gained since its length was `kept` (a value not among the fields)."""
    global _kw_len
    if _kw_ok:
        _kw_len = kept


cdef object number(Cur* c):
    """A JSON integer as orjson reads it (an int from -2**63 to 2**64 - 1); _GIVE_UP for others (floats)."""
    cdef unsigned long long v = 0
    cdef unsigned long long d
    cdef Py_ssize_t j = c.i, first
    cdef bint neg = c.s[j] == b'-'
    if neg:
        j += 1
    first = j
    while j < c.n and c.s[j] >= b'0' and c.s[j] <= b'9':
        d = <unsigned long long>(c.s[j] - 48)
        if v > (18446744073709551615ULL - d) // 10:
            return _GIVE_UP
        v = v * 10 + d
        j += 1
    if j == first or (j - first > 1 and c.s[first] == b'0'):
        return _GIVE_UP  # no digits, or a leading zero: not JSON
    if j < c.n and (c.s[j] == b'.' or c.s[j] == b'e' or c.s[j] == b'E'):
        return _GIVE_UP
    c.i = j
    if not neg:
        return PyLong_FromUnsignedLongLong(v)
    if v > 9223372036854775808ULL:
        return _GIVE_UP
    return PyLong_FromLongLong(-<long long>(v - 1) - 1) if v else PyLong_FromLongLong(0)


cdef object array(Cur* c):
    """A JSON array of scalars as a list; _GIVE_UP for anything else (nested containers)."""
    cdef list out = []
    c.i += 1  # the '['
    ws(c)
    if c.i < c.n and c.s[c.i] == b']':
        c.i += 1
        return out
    while True:
        v = scalar(c)
        if v is _GIVE_UP:
            return _GIVE_UP
        out.append(v)
        if expect(c, b','):
            continue
        if expect(c, b']'):
            return out
        return _GIVE_UP


cdef object value(Cur* c):
    """A scalar or an array of scalars."""
    ws(c)
    if c.i < c.n and c.s[c.i] == b'[':
        return array(c)
    return scalar(c)


cdef object scalar(Cur* c):
    """A string, an integer (`number`), true, false or null, its text added to the keyword text; _GIVE_UP
    for anything else."""
    cdef unsigned char ch
    cdef Py_ssize_t start
    ws(c)
    if c.i >= c.n:
        return _GIVE_UP
    ch = <unsigned char>c.s[c.i]
    if ch == b'"':
        s = string(c, True)
        return _GIVE_UP if s is None else s
    if ch == b'-' or (ch >= b'0' and ch <= b'9'):
        start = c.i
        v = number(c)
        if v is not _GIVE_UP:  # its JSON text: str(v), or "-0" for 0, which holds it
            kw_add(c.s + start, c.i - start, True)
        return v
    if c.n - c.i >= 4 and memcmp(c.s + c.i, b"null", 4) == 0:
        c.i += 4
        kw_add(b"", 0, True)
        return None
    if c.n - c.i >= 4 and memcmp(c.s + c.i, b"true", 4) == 0:
        kw_add(c.s + c.i, 4, True)
        c.i += 4
        return True
    if c.n - c.i >= 5 and memcmp(c.s + c.i, b"false", 5) == 0:
        kw_add(c.s + c.i, 5, True)
        c.i += 5
        return False
    return _GIVE_UP

cdef inline bint is_key(Cur* c, Py_ssize_t start, Py_ssize_t n, const char* what, Py_ssize_t wn) noexcept:
    return n == wn and memcmp(c.s + start, what, wn) == 0

cdef bint put_new(dict fields, object name, object value) except -1:
    """Set a name not yet in `fields`; False (give up) when it is there. One lookup (`setdefault`), which set
    it exactly when the dict grew (it gives back the value there, which may be this very object)."""
    cdef Py_ssize_t n = PyDict_GET_SIZE(fields)
    PyDict_SetDefault(fields, name, value)
    return PyDict_GET_SIZE(fields) > n

cdef int put_leaf(dict fields, object name, object value) except -1:
    """`_common.put(fields, name, value, qualifier="UserData")`: a name already taken is qualified."""
    if not put_new(fields, name, value):
        put(fields, name, value, qualifier="UserData")  # (rare) the shape's own naming
    return 0


cdef inline bint first_time(
    Cur* c, Py_ssize_t* starts, Py_ssize_t* lens, Py_ssize_t* count, Py_ssize_t kstart, Py_ssize_t kn
) noexcept:
    """Notes an object's key among the `count` before it; False when it is one of them (orjson keeps the
    last value, where the general path puts it) or there are MAX_KEYS already."""
    cdef Py_ssize_t t
    if count[0] == MAX_KEYS:
        return False
    for t in range(count[0]):
        if lens[t] == kn and memcmp(c.s + starts[t], c.s + kstart, kn) == 0:
            return False
    starts[count[0]] = kstart
    lens[count[0]] = kn
    count[0] += 1
    return True


cdef inline int open_object(Cur* c) noexcept:
    """Reads an object's `{`: 1 when a member follows, 0 when it is empty (its `}` read too), -1 when there
    is no object (as `next_member`)."""
    if not expect(c, b'{'):
        return -1
    ws(c)
    if c.i < c.n and c.s[c.i] == b'}':
        c.i += 1
        return 0
    return 1


cdef inline int next_member(Cur* c) noexcept:
    """After an object's member: 1 when another follows (its `,` read), 0 at the object's `}`, -1 otherwise."""
    if expect(c, b','):
        return 1
    if expect(c, b'}'):
        return 0
    return -1


cdef int put_system(dict fields, object name, object v, bint* texts) except -2:
    """`put_new` of a System field: -1 (give up) when the name is taken, else 0; `texts` is set when the
    value is text where the schema has an integer (`system_ints` converts it)."""
    if not put_new(fields, name, v):
        return -1
    if type(v) is str and name in _SYSTEM_INTS:
        texts[0] = True
    return 0


cdef int element(Cur* c, dict fields, Py_ssize_t kstart, Py_ssize_t kn, bint* texts) except -2:
    """A System element that is an object, after its `{`: `#attributes` (each `<element>_<attribute>`) and
    an optional `#text` (the element's own name). As `put_system`."""
    cdef Py_ssize_t astart, an
    cdef int more
    cdef char name[NAME_MAX]
    an = raw_key(c, &astart)
    if not is_key(c, astart, an, b"#attributes", 11) or not expect(c, b':') or kn + 1 >= NAME_MAX:
        return -1
    memcpy(name, c.s + kstart, kn)
    name[kn] = b'_'
    more = open_object(c)
    while more == 1:
        an = raw_key(c, &astart)
        if an < 0 or kn + 1 + an > NAME_MAX or not expect(c, b':'):
            return -1
        v = scalar(c)
        if v is _GIVE_UP:
            return -1
        memcpy(name + kn + 1, c.s + astart, an)
        if put_system(fields, name_of(name, kn + 1 + an), v, texts) < 0:
            return -1
        more = next_member(c)
    if more < 0:
        return -1
    more = next_member(c)  # the element's end, or its #text
    if more == 1:
        an = raw_key(c, &astart)
        if not is_key(c, astart, an, b"#text", 5) or not expect(c, b':'):
            return -1
        v = scalar(c)
        if v is _GIVE_UP or put_system(fields, name_of(c.s + kstart, kn), v, texts) < 0:
            return -1
        more = 0 if expect(c, b'}') else -1
    return more


cdef int system(Cur* c, dict fields) except -2:
    """The System object's fields; 1 when one is text where the schema has an integer, -1 to give up."""
    cdef Py_ssize_t kstart, kn
    cdef Py_ssize_t starts[MAX_KEYS]
    cdef Py_ssize_t lens[MAX_KEYS]
    cdef Py_ssize_t count = 0
    cdef int more, put
    cdef bint texts = False
    more = open_object(c)
    while more == 1:
        kn = raw_key(c, &kstart)
        # a repeated element: orjson keeps the last, give that case up
        if kn < 0 or not first_time(c, starts, lens, &count, kstart, kn) or not expect(c, b':'):
            return -1
        ws(c)
        if c.i < c.n and c.s[c.i] == b'{':
            c.i += 1
            put = element(c, fields, kstart, kn, &texts)
        else:
            v = scalar(c)
            if v is _GIVE_UP:
                return -1
            put = put_system(fields, name_of(c.s + kstart, kn), v, &texts)
        if put < 0:
            return -1
        more = next_member(c)
    if more < 0:
        return -1
    return 1 if texts else 0


cdef int event_data(Cur* c, dict fields) except -2:
    cdef Py_ssize_t kstart, kn, astart, an
    cdef int more
    ws(c)
    if c.n - c.i >= 4 and memcmp(c.s + c.i, b"null", 4) == 0:
        c.i += 4
        return 0
    more = open_object(c)
    while more == 1:
        kn = raw_key(c, &kstart)
        if kn < 0 or not expect(c, b':'):
            return -1
        if kn > 0 and c.s[kstart] == b'#':  # #text, #attributes: the shape's other branches
            return -1
        ws(c)
        if c.i < c.n and c.s[c.i] == b'{':  # {"#text": X}: X under the element's name
            c.i += 1
            an = raw_key(c, &astart)
            if not is_key(c, astart, an, b"#text", 5) or not expect(c, b':'):
                return -1
            v = value(c)
            if v is _GIVE_UP or not expect(c, b'}'):
                return -1
        else:
            v = value(c)
            if v is _GIVE_UP:
                return -1
        if not put_new(fields, name_of(c.s + kstart, kn), v):
            return -1
        more = next_member(c)
    if more < 0:
        return -1
    return 0


cdef bint is_xmlns(Cur* c, Py_ssize_t start, Py_ssize_t n) noexcept:
    """Whether an attribute's name is `xmlns` or `xmlns:...` (markup, which the shape leaves out)."""
    return n >= 5 and memcmp(c.s + start, b"xmlns", 5) == 0 and (n == 5 or c.s[start + 5] == b':')


cdef int leaves(Cur* c, dict fields, const char* name, Py_ssize_t nn, int depth) except -2:
    """The value at the cursor as `flatten_leaves(value, fields, qualifier="UserData", name=name)` puts it: an
    object's leaves by their own names (its `#attributes` but `xmlns` by theirs, its `#text` by `name`),
    anything else under `name` (`put_leaf`). -1 to give up: a key met twice in an object (orjson keeps the
    last), an attribute or `#text` that is not a scalar (or array), nesting past MAX_DEPTH."""
    cdef Py_ssize_t kstart, kn, astart, an, kept
    cdef Py_ssize_t starts[MAX_KEYS]
    cdef Py_ssize_t lens[MAX_KEYS]
    cdef Py_ssize_t astarts[MAX_KEYS]
    cdef Py_ssize_t alens[MAX_KEYS]
    cdef Py_ssize_t count = 0, acount
    cdef int more
    ws(c)
    if c.i >= c.n or c.s[c.i] != b'{':
        v = value(c)
        if v is _GIVE_UP:
            return -1
        return put_leaf(fields, name_of(name, nn), v)
    if depth == MAX_DEPTH:
        return -1
    more = open_object(c)
    while more == 1:
        kn = raw_key(c, &kstart)
        if kn < 0 or not first_time(c, starts, lens, &count, kstart, kn) or not expect(c, b':'):
            return -1
        if is_key(c, kstart, kn, b"#attributes", 11):
            acount = 0
            more = open_object(c)
            while more == 1:
                an = raw_key(c, &astart)
                if an < 0 or not first_time(c, astarts, alens, &acount, astart, an) or not expect(c, b':'):
                    return -1
                kept = _kw_len
                v = scalar(c)
                if v is _GIVE_UP:
                    return -1
                if is_xmlns(c, astart, an):
                    restore_kw(kept)  # left out of the fields, so out of their text too
                else:
                    put_leaf(fields, name_of(c.s + astart, an), v)
                more = next_member(c)
            if more < 0:
                return -1
        elif is_key(c, kstart, kn, b"#text", 5):
            v = value(c)
            if v is _GIVE_UP:
                return -1
            put_leaf(fields, name_of(name, nn), v)
        elif leaves(c, fields, c.s + kstart, kn, depth + 1) < 0:
            return -1
        more = next_member(c)
    return -1 if more < 0 else 0


cdef int skip_attributes(Cur* c) except -2:
    """The event's #attributes (xmlns): an object of strings."""
    cdef Py_ssize_t kstart, kn
    cdef int more = open_object(c)
    while more == 1:
        kn = raw_key(c, &kstart)
        if kn < 0 or not expect(c, b':'):
            return -1
        ws(c)
        if c.i >= c.n or c.s[c.i] != b'"' or string(c, False) is None:
            return -1
        more = next_member(c)
    if more < 0:
        return -1
    return 0


cdef bint canonical_system_ints(dict fields) except -1:
    """`system_ints(fields)`; whether each integer it made from text is that text's string form (`"4688"`,
    not `"0x1250"` or `" 4688"`), so that the keyword text holds the value the hunt joins."""
    texts = {k: v for k, v in fields.items() if type(v) is str and k in _SYSTEM_INTS}
    system_ints(fields)
    for k, v in texts.items():
        if fields[k] is not v and str(fields[k]) != v:
            return False
    return True


def fields_of(text):
    """`EvtxJsonShape.fields(orjson.loads(text))`, or None where this reader gives up (see the module).
    `text`: a str, or its UTF-8 as bytes (what `_binxml.chunk_records(..., utf8=True)` gives for text that
    is not ASCII: a str's UTF-8 would be made again here). Bytes must be UTF-8, as the writer's always are:
    a string or name that is not gives None, but what is passed over unread (`#attributes` of the Event) is
    not checked."""
    try:
        return _fields_of(text)
    except UnicodeDecodeError:  # a name or string of bytes that are not UTF-8: orjson's error to tell
        return None


cdef object _fields_of(object text):
    cdef Cur c
    cdef Py_ssize_t kstart, kn
    cdef int status
    cdef bint seen_system = False, seen_data = False, seen_attrs = False, seen_user = False
    cdef dict fields = casefile_dict_presized(_fields_hint)
    global _last, _read, _kw_len, _kw_ok, _fields_hint
    _last = _read = None
    _kw_len = 0
    _kw_ok = True
    if type(text) is bytes:
        c.s = PyBytes_AS_STRING(text)
        c.n = PyBytes_GET_SIZE(text)
    else:
        try:
            c.s = PyUnicode_AsUTF8AndSize(text, &c.n)  # (a TypeError for anything but a str)
        except UnicodeEncodeError:
            return None
    c.i = 0
    if not expect(&c, b'{'):
        return None
    kn = raw_key(&c, &kstart)
    if not is_key(&c, kstart, kn, b"Event", 5) or not expect(&c, b':') or not expect(&c, b'{'):
        return None
    while True:
        kn = raw_key(&c, &kstart)
        if not expect(&c, b':'):
            return None
        if is_key(&c, kstart, kn, b"#attributes", 11) and not seen_attrs and not seen_system:
            seen_attrs = True
            if skip_attributes(&c) < 0:
                return None
        elif is_key(&c, kstart, kn, b"System", 6) and not seen_system:
            seen_system = True
            status = system(&c, fields)
            if status < 0:
                return None
            if status and not canonical_system_ints(fields):
                _kw_ok = False  # an integer's text part is not its string form
        elif is_key(&c, kstart, kn, b"EventData", 9) and seen_system and not seen_data:
            seen_data = True
            if event_data(&c, fields) < 0:
                return None
        elif is_key(&c, kstart, kn, b"UserData", 8) and seen_system and not seen_user:
            seen_user = True
            if leaves(&c, fields, b"UserData", 8, 0) < 0:
                return None
        else:
            return None
        if expect(&c, b','):
            continue
        if expect(&c, b'}'):
            break
        return None
    if not seen_system or not expect(&c, b'}'):
        return None
    ws(&c)
    if c.i != c.n:
        return None
    if _kw_ok:
        _last = fields
    _read = fields
    _fields_hint = len(fields)  # a file's records mostly share their layout
    return fields


def keyword_text(dict fields):
    """Every value of the `fields` `fields_of` has just read, as the keyword gate reads them (the string
    forms of `vector._joined_values` with integers, NUL-separated, in UTF-8 with ASCII letters lower-cased:
    see `_kw_ok`); None for any other fields, or when a value holds U+0130 or U+212A."""
    if fields is not _last:
        return None
    return PyBytes_FromStringAndSize(_kw, _kw_len)


def layout_key(dict fields):
    """A str that stands for the names of the `fields` `fields_of` has just read, in order: equal for equal
    names (their NUL-joined text), and the same object for every record of a layout while it stays among the
    LAYOUTS remembered, so that looking it up hashes nothing. None for other fields, or more than LAYOUT_MAX.

    A layout is found by a hash of its names' identities (`name_of` gives a name's one object while cached),
    then checked name by name against the names remembered, so no hash collision can confuse two."""
    cdef PyObject* names[LAYOUT_MAX]
    cdef PyObject* key
    cdef PyObject* value
    cdef Py_ssize_t pos = 0, n = 0, i
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL
    if fields is not _read:
        return None
    while PyDict_Next(fields, &pos, &key, &value):
        if n == LAYOUT_MAX:
            return None
        names[n] = key
        n += 1
        h = (h + (<uint64_t>key >> 4)) * 0x9E3779B97F4A7C15ULL  # (objects are 16-byte aligned)
        h ^= h >> 32
    h ^= h >> 30  # splitmix64's finish: every bit of every name's address moves the slot
    h *= 0xBF58476D1CE4E5B9ULL
    h ^= h >> 27
    h *= 0x94D049BB133111EBULL
    h ^= h >> 31
    cdef Py_ssize_t slot = <Py_ssize_t>(h & (LAYOUTS - 1))
    known = _layout_names[slot]
    if known is not None and _layout_hashes[slot] == h and PyTuple_GET_SIZE(known) == n:
        for i in range(n):
            if PyTuple_GET_ITEM(known, i) != names[i]:
                break
        else:
            return _layout_keys[slot]
    # names never hold a NUL (`raw_key` gives up on control characters): the joined text stands for them
    layout = tuple(fields)
    text = "\0".join(layout)
    _layout_names[slot] = layout
    _layout_keys[slot] = text
    _layout_hashes[slot] = h
    return text
