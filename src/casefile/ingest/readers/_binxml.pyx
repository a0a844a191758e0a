# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""An EVTX chunk's records written as the JSON text the `evtx` parser gives them, in C, for the chunks most
files hold.

`evtx.PyEvtxParser(...).records_json()` turns each record's binary XML into a tree, then into JSON text, then
into a Python dict around it (about 2.6 us a record of the corpus, chunk by chunk). This writes the same
text straight from the chunk's bytes (about 1.6 us). It writes only what it has seen the parser write, byte
for byte (`tests/ingest/test_binxml.py` holds every chunk of the corpus to it): template instances (nested
ones in `BinXml` values included) and elements written out without a template; elements of attributes,
child elements and at most one text value; values of the common types (strings, integers, booleans,
hexadecimal integers, GUIDs, FILETIMEs, SIDs, binary) and string arrays as an unnamed `<Data>`'s text;
chunks whose records run back to back from the header to the free space, numbered one after another. For
anything else in a chunk (other arrays, floats, entity references, a name met twice in an element, mixed
content, an odd header) `chunk_records` gives None and the caller lets the parser read that chunk.

What the parser writes, where this follows it: a string's closing NULs are dropped; an element's empty
string is no text (`null`) but a named `<Data>`'s is `""`, as is a named `<Data>` with no value at all; a
boolean other than 0 or 1 is the integer it holds; a string array's strings are `{"#text": [...]}`, one
alone `{"#text": "..."}`, an optional one left null `{"#text": ""}`; control characters are escaped as
`\\u00XX`, upper case. Only under `<EventData>` is a `<Data>` named by its Name (and an array one element's
text); keys are written as they stand, so a name that would need an escape is left to the parser.

What the parser refuses, this leaves to it (found by changing bytes of corpus chunks at random and
comparing, `tests/ingest/test_binxml.py`): it loads the chunk's string and template tables before any
record, reads every substitution value (those no token takes too: their types, sizes, UTF-16, times),
the type each substitution token declares, the end token after the values, and the record header's time.

Cython proper, not Python: without a C compiler there is no build, and the reader uses the parser alone.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_DecodeUTF8, PyUnicode_New
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memcmp, memset
from libc.stdlib cimport realloc

cdef extern from *:
    """
    #if defined(__SSE2__) && defined(__GNUC__)
    #include <emmintrin.h>
    #define CASEFILE_SSE2 1
    #else
    #define CASEFILE_SSE2 0
    #endif
    /* How many of the `units` UTF-16LE units at `p` are plain ASCII (no control character, quote or
       backslash) before the first that is not, written to `o` as one byte each, eight at a time (a string's
       last few too, where 16 bytes from them lie before `end`, the chunk's end); 8 bytes past what it
       returns may be written. 0 without SSE2. */
    static inline Py_ssize_t casefile_plain(const uint8_t* p, Py_ssize_t units, char* o, const uint8_t* end) {
        Py_ssize_t i = 0;
    #if CASEFILE_SSE2
        const __m128i high = _mm_set1_epi16((short)0xFF80), space = _mm_set1_epi16(0x20);
        const __m128i quote = _mm_set1_epi16(0x22), backslash = _mm_set1_epi16(0x5C);
        const __m128i zero = _mm_setzero_si128(), ones = _mm_set1_epi16(-1);
        while (i < units) {
            Py_ssize_t left = units - i;
            if (left < 8 && p + 2 * i + 16 > end) break;
            __m128i w = _mm_loadu_si128((const __m128i*)(p + 2 * i));
            /* a lane of ones for a unit above 0x7F (a high bit), below a space, a quote or a backslash */
            __m128i bad = _mm_andnot_si128(_mm_cmpeq_epi16(_mm_and_si128(w, high), zero), ones);
            bad = _mm_or_si128(bad, _mm_cmplt_epi16(w, space));
            bad = _mm_or_si128(bad, _mm_cmpeq_epi16(w, quote));
            bad = _mm_or_si128(bad, _mm_cmpeq_epi16(w, backslash));
            unsigned mask = (unsigned)_mm_movemask_epi8(bad);
            if (left < 8) mask &= (1u << (2 * left)) - 1;
            _mm_storel_epi64((__m128i*)(o + i), _mm_packus_epi16(w, w));
            if (mask) return i + (Py_ssize_t)(__builtin_ctz(mask) >> 1);
            i += left < 8 ? left : 8;
        }
    #endif
        return i;
    }
    """
    enum: CASEFILE_SSE2
    Py_ssize_t casefile_plain(const uint8_t* p, Py_ssize_t units, char* o, const uint8_t* end) noexcept nogil


cdef enum:
    CHUNK = 65536
    CHUNK_HEADER = 512
    MAX_NODES = 2048
    MAX_ATTRS = 1024
    MAX_SUBS = 4096
    MAX_DEPTH = 32
    MAX_NEST = 8
    MAX_KEYS = 128
    MAX_RECORDS = 2341  # (CHUNK - CHUNK_HEADER) // 28 + 1
    # value kinds besides the EVTX types: a template's own text (a Value token's UTF-16 characters)
    LITERAL = 0x100

#: FILETIME ticks of 10000-01-01: times from there on are left to the parser.
cdef uint64_t FILETIME_END = 2650467744000000000ULL

cdef struct Val:
    int kind          # the EVTX value type, or LITERAL
    Py_ssize_t off    # where its bytes start in the chunk
    Py_ssize_t size

cdef struct Node:
    bint elem
    bint nulls            # an optional substitution of this element's content was null
    Py_ssize_t name       # offset of the element's name structure in the chunk
    int first_attr
    int n_attrs
    int first_kid
    int last_kid
    int next
    Val val

cdef struct Attr:
    Py_ssize_t name
    int parts
    Val val

cdef struct Ctx:
    const uint8_t* c
    Node nodes[MAX_NODES]
    int n_nodes
    Attr attrs[MAX_ATTRS]
    int n_attrs
    uint8_t sub_kind[MAX_SUBS]
    uint8_t sub_used[MAX_SUBS]
    Py_ssize_t sub_off[MAX_SUBS]
    Py_ssize_t sub_size[MAX_SUBS]
    int n_subs
    char* out
    Py_ssize_t len
    Py_ssize_t cap
    bint ascii
    bint checking     # a template's tokens read for their form alone (`tables_ok`): no values
    uint8_t used[CHUNK >> 3]  # a bit per chunk offset: the templates records expanded

cdef Ctx _ctx
cdef const char* _HEX_LOWER = b"0123456789abcdef"
cdef const char* _HEX_UPPER = b"0123456789ABCDEF"


cdef inline uint16_t u16(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint16_t>p[1] << 8)


cdef inline uint32_t u32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t u64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


# --- the tree of one record -------------------------------------------------------------------------------

cdef inline Py_ssize_t name_end(Ctx* x, Py_ssize_t name, Py_ssize_t pos) noexcept nogil:
    """Where the tokens go on after a name offset read at `pos`: past the name when it is written there (its
    first use in the chunk), at `pos` when it refers back to one; -1 for a name that is not a plain one."""
    cdef Py_ssize_t count, end
    if name < CHUNK_HEADER or name + 8 > CHUNK:
        return -1
    count = u16(x.c + name + 6)
    end = name + 8 + 2 * count + 2
    if end > CHUNK or count == 0 or u16(x.c + end - 2) != 0:
        return -1
    if name == pos:
        return end
    if name > pos:
        return -1
    return pos


cdef inline int new_node(Ctx* x, int parent, bint elem) noexcept nogil:
    cdef int i = x.n_nodes
    cdef Node* n
    if i >= MAX_NODES:
        return -1
    x.n_nodes += 1
    n = &x.nodes[i]
    n.elem = elem
    n.nulls = False
    n.name = 0
    n.first_attr = 0
    n.n_attrs = 0
    n.first_kid = -1
    n.last_kid = -1
    n.next = -1
    if parent >= 0:
        if x.nodes[parent].last_kid >= 0:
            x.nodes[x.nodes[parent].last_kid].next = i
        else:
            x.nodes[parent].first_kid = i
        x.nodes[parent].last_kid = i
    return i


cdef inline uint32_t paired(const uint8_t* p, Py_ssize_t i, Py_ssize_t units, uint32_t u) noexcept nogil:
    """The character of surrogate `u` read before unit `i`, with the low surrogate at `i`; 0 for a lone
    one."""
    cdef uint32_t v
    if u >= 0xDC00 or i >= units:
        return 0
    v = p[2 * i] | (<uint32_t>p[2 * i + 1] << 8)
    if v < 0xDC00 or v >= 0xE000:
        return 0
    return 0x10000 + ((u - 0xD800) << 10) + (v - 0xDC00)


cdef bint utf16_ok(const uint8_t* p, Py_ssize_t units) noexcept nogil:
    """Whether UTF-16LE text holds no lone surrogate."""
    cdef Py_ssize_t i = 0
    cdef uint32_t u
    while i < units:
        u = p[2 * i] | (<uint32_t>p[2 * i + 1] << 8)
        i += 1
        if 0xD800 <= u < 0xE000:
            if not paired(p, i, units, u):
                return False
            i += 1
    return True


cdef inline bint known_kind(uint8_t kind) noexcept nogil:
    """Whether a value type is one of the format's (an array of one, too)."""
    if kind & 0x80:
        return 0x01 <= (kind & 0x7F) <= 0x15
    return kind <= 0x15 or kind == 0x20 or kind == 0x21 or kind == 0x23


cdef inline bint known_value(uint8_t kind, Py_ssize_t size) noexcept nogil:
    """Whether a substitution value's type is one of the format's, of the size its type has (where it has
    one); not a SYSTEMTIME, whose fields the parser checks (and this module does not write)."""
    if kind == 0x01 or kind == 0x81:
        return size & 1 == 0  # UTF-16
    if kind & 0x80 or kind > 0x15:
        return known_kind(kind)
    if kind == 0x12:
        return False
    if kind == 0x03 or kind == 0x04:
        return size == 1
    if kind == 0x05 or kind == 0x06:
        return size == 2
    if kind == 0x07 or kind == 0x08 or kind == 0x0B or kind == 0x0D or kind == 0x14:
        return size == 4
    if kind == 0x09 or kind == 0x0A or kind == 0x0C or kind == 0x11 or kind == 0x15:
        return size == 8
    if kind == 0x0F:
        return size == 16
    return True


cdef int instance(Ctx* x, Py_ssize_t p, Py_ssize_t end, int parent, int nest) noexcept nogil:
    """Expand the template instance of the fragment at `p` (up to `end`) into children of `parent`."""
    cdef Py_ssize_t defn, size, body, i, n, at
    cdef int base
    if nest >= MAX_NEST or p + 4 > end or x.c[p] != 0x0F:
        return -1
    p += 4
    if p < end and x.c[p] != 0x0C and nest == 0:  # a record's elements written out, without a template
        return tokens(x, p, end, parent, 0, 0, nest, 0)  # (and without the dependency identifier)
    if p + 10 > end or x.c[p] != 0x0C:
        return -1
    defn = u32(x.c + p + 6)
    p += 10
    if defn == p:  # the definition follows, on the template's first use in the chunk
        if p + 24 > end:
            return -1
        p += 24 + u32(x.c + p + 20)
    elif defn < CHUNK_HEADER or defn > p:
        return -1
    if defn + 24 > CHUNK:
        return -1
    size = u32(x.c + defn + 20)
    body = defn + 24
    x.used[defn >> 3] |= <uint8_t>(1 << (defn & 7))
    if size > CHUNK or body + size > CHUNK or p + 4 > end:
        return -1
    n = u32(x.c + p)
    p += 4
    base = x.n_subs
    if n > MAX_SUBS or base + n > MAX_SUBS or p + 4 * n > end:
        return -1
    at = p + 4 * n
    for i in range(n):
        x.sub_kind[base + i] = x.c[p + 4 * i + 2]
        x.sub_used[base + i] = False
        x.sub_size[base + i] = u16(x.c + p + 4 * i)
        x.sub_off[base + i] = at
        if not known_value(x.sub_kind[base + i], x.sub_size[base + i]):
            return -1  # the parser reads every value, those no token takes too, and refuses this one
        at += x.sub_size[base + i]
    if at > end or (at < end and x.c[at] != 0x00):
        return -1  # what follows the values is the fragment's end token, where the parser reads one
    x.n_subs += <int>n
    if tokens(x, body, body + size, parent, base, <int>n, nest, 2) < 0:
        return -1
    for i in range(n):  # the parser decodes every value, those no token takes too
        if x.sub_used[base + i]:
            continue
        if x.sub_kind[base + i] == 0x01 or x.sub_kind[base + i] == 0x81:
            if not utf16_ok(x.c + x.sub_off[base + i], x.sub_size[base + i] >> 1):
                return -1
        elif x.sub_kind[base + i] == 0x11 and u64(x.c + x.sub_off[base + i]) >= FILETIME_END:
            return -1
    return 0


cdef int value_node(Ctx* x, int top, int attr, int kind, Py_ssize_t off, Py_ssize_t size) noexcept nogil:
    cdef int i
    cdef Val* v
    if attr >= 0:
        x.attrs[attr].parts += 1
        v = &x.attrs[attr].val
    else:
        i = new_node(x, top, False)
        if i < 0:
            return -1
        v = &x.nodes[i].val
    v.kind = kind
    v.off = off
    v.size = size
    return 0


cdef int tokens(Ctx* x, Py_ssize_t pos, Py_ssize_t end, int parent, int base, int n_subs, int nest,
                int dep) noexcept nogil:
    """A template's body: its elements and values become nodes under `parent`; substitutions are taken from
    the instance's values `base` .. `base + n_subs`."""
    cdef int stack[MAX_DEPTH]
    cdef int depth = 0
    cdef int attr = -1
    cdef int top = parent
    cdef int i, kind
    cdef uint8_t t
    cdef Py_ssize_t name, count, idx
    while pos < end:
        t = x.c[pos]
        if t == 0x00:
            return 0 if depth == 0 else -1
        if t == 0x01 or t == 0x41:
            if pos + 9 + dep > end or depth >= MAX_DEPTH:
                return -1
            name = u32(x.c + pos + 5 + dep)
            pos = name_end(x, name, pos + 9 + dep)
            if pos < 0 or pos > end:
                return -1
            if t == 0x41:
                pos += 4
            i = new_node(x, top, True)
            if i < 0:
                return -1
            x.nodes[i].name = name
            x.nodes[i].first_attr = x.n_attrs
            stack[depth] = top
            depth += 1
            top = i
            attr = -1
        elif t == 0x06 or t == 0x46:
            if pos + 5 > end or top == parent or x.n_attrs >= MAX_ATTRS:
                return -1
            name = u32(x.c + pos + 1)
            pos = name_end(x, name, pos + 5)
            if pos < 0 or pos > end:
                return -1
            attr = x.n_attrs
            x.n_attrs += 1
            x.attrs[attr].name = name
            x.attrs[attr].parts = 0
            x.nodes[top].n_attrs += 1
        elif t == 0x02:
            attr = -1
            pos += 1
        elif t == 0x03 or t == 0x04:
            if depth == 0:
                return -1
            depth -= 1
            top = stack[depth]
            attr = -1
            pos += 1
        elif t == 0x05 or t == 0x45:
            if pos + 4 > end or x.c[pos + 1] != 0x01 or top == parent:
                return -1
            count = u16(x.c + pos + 2)
            if pos + 4 + 2 * count > end:
                return -1
            if value_node(x, top, attr, LITERAL, pos + 4, 2 * count) < 0:
                return -1
            pos += 4 + 2 * count
        elif t == 0x0D or t == 0x0E:
            if pos + 4 > end or top == parent:
                return -1
            idx = u16(x.c + pos + 1)
            if not known_kind(x.c[pos + 3]):
                return -1  # the parser reads the type a template declares, and refuses this one
            pos += 4
            if x.checking:
                continue
            if idx >= n_subs:
                return -1
            kind = x.sub_kind[base + idx]
            x.sub_used[base + idx] = True
            if kind == 0x21:  # BinXml: a fragment of its own, its elements children of this one
                if attr >= 0:
                    return -1
                if instance(x, x.sub_off[base + idx], x.sub_off[base + idx] + x.sub_size[base + idx],
                            top, nest + 1) < 0:
                    return -1
            elif kind == 0x00:
                if t == 0x0D:
                    return -1
                if attr < 0:
                    x.nodes[top].nulls = True
                if x.c[pos - 1] == 0x81:
                    if attr >= 0 or value_node(x, top, -1, 0x81, pos, 0) < 0:
                        return -1
                elif x.c[pos - 1] & 0x80:
                    return -1
            elif value_node(x, top, attr, kind, x.sub_off[base + idx], x.sub_size[base + idx]) < 0:
                return -1
        elif t == 0x0F:
            pos += 4
        else:  # CDATA, character and entity references, processing instructions, nested instances
            return -1
    return -1


# --- writing ----------------------------------------------------------------------------------------------

cdef int grow(Ctx* x, Py_ssize_t more) noexcept nogil:
    cdef Py_ssize_t cap = x.cap
    cdef char* out
    while x.len + more > cap:
        cap = cap * 2 if cap else 65536
    if cap != x.cap:
        out = <char*>realloc(x.out, cap)
        if out == NULL:
            return -1
        x.out = out
        x.cap = cap
    return 0


cdef inline int put(Ctx* x, const char* s, Py_ssize_t n) noexcept nogil:
    if x.len + n > x.cap and grow(x, n) < 0:
        return -1
    memcpy(x.out + x.len, s, n)
    x.len += n
    return 0


cdef inline int put_char(Ctx* x, char ch) noexcept nogil:
    if x.len + 1 > x.cap and grow(x, 1) < 0:
        return -1
    x.out[x.len] = ch
    x.len += 1
    return 0


cdef int put_utf16(Ctx* x, const uint8_t* p, Py_ssize_t units, bint key=False) noexcept nogil:
    """UTF-16LE characters as a JSON string, escaped as serde_json escapes; -1 for a NUL or a lone surrogate
    (not seen written). `key`: an object's key, which the parser writes as it stands: -1 for a character
    that would need an escape (a control character, a quote, a backslash: other JSON, or none)."""
    cdef Py_ssize_t i = 0
    cdef uint32_t u
    cdef char* o
    if x.len + 6 * units + 10 > x.cap and grow(x, 6 * units + 10) < 0:  # (+8: `casefile_plain`'s last store)
        return -1
    cdef uint64_t w, q, b
    cdef uint32_t four
    cdef Py_ssize_t plain
    o = x.out + x.len
    o[0] = b'"'
    o += 1
    while i < units:
        if CASEFILE_SSE2:  # plain ASCII characters (no quote, backslash or control) eight at a time
            plain = casefile_plain(p + 2 * i, units - i, o, x.c + CHUNK)
            i += plain
            o += plain
            if i >= units:
                break
        elif i + 4 <= units:  # four at a time
            memcpy(&w, p + 2 * i, 8)
            q = w ^ 0x0022002200220022ULL
            b = w ^ 0x005C005C005C005CULL
            if ((w & 0xFF80FF80FF80FF80ULL) == 0
                    and ((w - 0x0020002000200020ULL) & 0x8000800080008000ULL) == 0
                    and ((q - 0x0001000100010001ULL) & ~q & 0x8000800080008000ULL) == 0
                    and ((b - 0x0001000100010001ULL) & ~b & 0x8000800080008000ULL) == 0):
                four = <uint32_t>((w & 0xFFULL) | ((w >> 8) & 0xFF00ULL) | ((w >> 16) & 0xFF0000ULL)
                                  | ((w >> 24) & 0xFF000000ULL))
                memcpy(o, &four, 4)
                o += 4
                i += 4
                continue
        u = p[2 * i] | (<uint32_t>p[2 * i + 1] << 8)
        i += 1
        if u < 0x80:
            if u >= 0x20 and u != 0x22 and u != 0x5C:
                o[0] = <char>u
                o += 1
            elif key or u == 0:
                return -1
            elif u == 0x22 or u == 0x5C:
                o[0] = b'\\'
                o[1] = <char>u
                o += 2
            else:
                o[0] = b'\\'
                if u == 0x08:
                    o[1] = b'b'
                elif u == 0x09:
                    o[1] = b't'
                elif u == 0x0A:
                    o[1] = b'n'
                elif u == 0x0C:
                    o[1] = b'f'
                elif u == 0x0D:
                    o[1] = b'r'
                else:
                    o[1] = b'u'
                    o[2] = b'0'
                    o[3] = b'0'
                    o[4] = _HEX_UPPER[u >> 4]
                    o[5] = _HEX_UPPER[u & 15]
                    o += 4
                o += 2
            continue
        x.ascii = False
        if u < 0x800:
            o[0] = <char>(0xC0 | (u >> 6))
            o[1] = <char>(0x80 | (u & 0x3F))
            o += 2
        elif u < 0xD800 or u >= 0xE000:
            o[0] = <char>(0xE0 | (u >> 12))
            o[1] = <char>(0x80 | ((u >> 6) & 0x3F))
            o[2] = <char>(0x80 | (u & 0x3F))
            o += 3
        else:
            u = paired(p, i, units, u)
            if not u:
                return -1
            i += 1
            o[0] = <char>(0xF0 | (u >> 18))
            o[1] = <char>(0x80 | ((u >> 12) & 0x3F))
            o[2] = <char>(0x80 | ((u >> 6) & 0x3F))
            o[3] = <char>(0x80 | (u & 0x3F))
            o += 4
    o[0] = b'"'
    x.len = o + 1 - x.out
    return 0


cdef inline Py_ssize_t string_units(const uint8_t* p, Py_ssize_t size) noexcept nogil:
    """A string value's characters without the NULs that end it."""
    cdef Py_ssize_t units = size >> 1
    while units > 0 and p[2 * units - 2] == 0 and p[2 * units - 1] == 0:
        units -= 1
    return units


cdef int put_uint(Ctx* x, uint64_t v) noexcept nogil:
    cdef char buf[24]
    cdef int i = 24
    while True:
        i -= 1
        buf[i] = <char>(48 + v % 10)
        v //= 10
        if v == 0:
            break
    return put(x, buf + i, 24 - i)


cdef int put_int(Ctx* x, int64_t v) noexcept nogil:
    if v < 0:
        if put_char(x, b'-') < 0:
            return -1
        return put_uint(x, <uint64_t>0 - <uint64_t>v)
    return put_uint(x, <uint64_t>v)


cdef int put_hex(Ctx* x, uint64_t v) noexcept nogil:
    cdef char buf[24]
    cdef int i = 24
    i -= 1
    buf[i] = b'"'
    while True:
        i -= 1
        buf[i] = _HEX_LOWER[v & 15]
        v >>= 4
        if v == 0:
            break
    i -= 3
    buf[i] = b'"'
    buf[i + 1] = b'0'
    buf[i + 2] = b'x'
    return put(x, buf + i, 24 - i)


cdef inline void digits(char* o, uint64_t v, int n) noexcept nogil:
    while n > 0:
        n -= 1
        o[n] = <char>(48 + v % 10)
        v //= 10


cdef int put_filetime(Ctx* x, uint64_t ticks) noexcept nogil:
    """100 ns ticks since 1601 as `"YYYY-MM-DDTHH:MM:SS.ffffffZ"` (microseconds, cut, as the parser writes
    them); -1 past the year 9999."""
    cdef uint64_t us = ticks // 10
    cdef uint64_t secs = us // 1000000
    cdef int64_t z = <int64_t>(secs // 86400) - 134774  # days since 1970-01-01
    cdef uint64_t rest = secs % 86400
    cdef int64_t era, doe, yoe, doy, mp, y, m, d
    cdef char* o
    if ticks >= FILETIME_END:
        return -1
    # Howard Hinnant's civil_from_days
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    if x.len + 29 > x.cap and grow(x, 29) < 0:
        return -1
    o = x.out + x.len
    o[0] = b'"'
    digits(o + 1, <uint64_t>y, 4)
    o[5] = b'-'
    digits(o + 6, <uint64_t>m, 2)
    o[8] = b'-'
    digits(o + 9, <uint64_t>d, 2)
    o[11] = b'T'
    digits(o + 12, rest // 3600, 2)
    o[14] = b':'
    digits(o + 15, (rest // 60) % 60, 2)
    o[17] = b':'
    digits(o + 18, rest % 60, 2)
    o[20] = b'.'
    digits(o + 21, us % 1000000, 6)
    o[27] = b'Z'
    o[28] = b'"'
    x.len += 29
    return 0


cdef inline char* hex_byte(char* o, uint8_t b) noexcept nogil:
    o[0] = _HEX_UPPER[b >> 4]
    o[1] = _HEX_UPPER[b & 15]
    return o + 2


cdef int put_guid(Ctx* x, const uint8_t* p) noexcept nogil:
    """`"XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX"`, upper case, the first three parts little-endian."""
    cdef char* o
    cdef int i
    if x.len + 38 > x.cap and grow(x, 38) < 0:
        return -1
    o = x.out + x.len
    o[0] = b'"'
    o += 1
    for i in range(3, -1, -1):
        o = hex_byte(o, p[i])
    o[0] = b'-'
    o = hex_byte(hex_byte(o + 1, p[5]), p[4])
    o[0] = b'-'
    o = hex_byte(hex_byte(o + 1, p[7]), p[6])
    o[0] = b'-'
    o = hex_byte(hex_byte(o + 1, p[8]), p[9])
    o[0] = b'-'
    o += 1
    for i in range(10, 16):
        o = hex_byte(o, p[i])
    o[0] = b'"'
    x.len += 38
    return 0


cdef int put_sid(Ctx* x, const uint8_t* p, Py_ssize_t size) noexcept nogil:
    """`"S-R-A-S1-S2..."`; -1 for an authority of more than 32 bits (written otherwise by Windows)."""
    cdef int count = p[1]
    cdef uint64_t auth = 0
    cdef int i
    if size != 8 + 4 * count:
        return -1
    for i in range(2, 8):
        auth = (auth << 8) | p[i]
    if auth >> 32:
        return -1
    if put(x, b'"S-', 3) < 0 or put_uint(x, p[0]) < 0 or put_char(x, b'-') < 0 or put_uint(x, auth) < 0:
        return -1
    for i in range(count):
        if put_char(x, b'-') < 0 or put_uint(x, u32(p + 8 + 4 * i)) < 0:
            return -1
    return put_char(x, b'"')


cdef inline int put_text(Ctx* x, Val* v, bint key) noexcept nogil:
    """A string value (its closing NULs dropped) or a template's own text, as a JSON string (`put_utf16`)."""
    cdef const uint8_t* p = x.c + v.off
    return put_utf16(x, p, string_units(p, v.size) if v.kind == 0x01 else v.size >> 1, key)


cdef int put_value(Ctx* x, Val* v) noexcept nogil:
    cdef const uint8_t* p = x.c + v.off
    cdef Py_ssize_t size = v.size, i
    cdef int kind = v.kind
    cdef char* o
    if kind == 0x01 or kind == LITERAL:
        return put_text(x, v, False)
    if kind == 0x04:
        return put_uint(x, p[0]) if size == 1 else -1
    if kind == 0x06:
        return put_uint(x, u16(p)) if size == 2 else -1
    if kind == 0x08:
        return put_uint(x, u32(p)) if size == 4 else -1
    if kind == 0x0A:
        return put_uint(x, u64(p)) if size == 8 else -1
    if kind == 0x03:
        return put_int(x, (<const int8_t*>p)[0]) if size == 1 else -1
    if kind == 0x05:
        return put_int(x, <int16_t>u16(p)) if size == 2 else -1
    if kind == 0x07:
        return put_int(x, <int32_t>u32(p)) if size == 4 else -1
    if kind == 0x09:
        return put_int(x, <int64_t>u64(p)) if size == 8 else -1
    if kind == 0x14:
        return put_hex(x, u32(p)) if size == 4 else -1
    if kind == 0x15:
        return put_hex(x, u64(p)) if size == 8 else -1
    if kind == 0x0F:
        return put_guid(x, p) if size == 16 else -1
    if kind == 0x11:
        return put_filetime(x, u64(p)) if size == 8 else -1
    if kind == 0x13:
        return put_sid(x, p, size) if size >= 8 else -1
    if kind == 0x0D:
        if size != 4:
            return -1
        if u32(p) > 1:  # the parser writes a boolean other than 0 and 1 as the integer it holds
            return put_int(x, <int32_t>u32(p))
        return put(x, b"true", 4) if u32(p) else put(x, b"false", 5)
    if kind == 0x0E:
        if x.len + 2 * size + 2 > x.cap and grow(x, 2 * size + 2) < 0:
            return -1
        o = x.out + x.len
        o[0] = b'"'
        o += 1
        for i in range(size):
            o = hex_byte(o, p[i])
        o[0] = b'"'
        x.len += 2 * size + 2
        return 0
    return -1  # floats, ANSI strings, SYSTEMTIME, size_t, handles, arrays: left to the parser


cdef int put_strings(Ctx* x, Val* v) noexcept nogil:
    """An element's text of a string array (0x81), as the parser writes it: `{"#text":[...]}`, the strings
    between NULs (the last NUL ends the last one); one string is written alone in `#text`."""
    cdef const uint8_t* p = x.c + v.off
    cdef Py_ssize_t units = v.size >> 1, i, start = 0, parts = 0
    for i in range(units):
        if p[2 * i] == 0 and p[2 * i + 1] == 0:
            parts += 1
    if units and not (p[2 * units - 2] == 0 and p[2 * units - 1] == 0):
        parts += 1
    if v.size == 0:
        return put(x, b'{"#text":""}', 12)
    if parts == 0 or v.size & 1:
        return -1
    if put(x, b'{"#text":', 9) < 0 or (parts > 1 and put_char(x, b'[') < 0):
        return -1
    for i in range(units + 1):
        if i == units or (p[2 * i] == 0 and p[2 * i + 1] == 0):
            if i == units and start == units:
                break
            if start and put_char(x, b',') < 0:
                return -1
            if put_utf16(x, p + 2 * start, i - start) < 0:
                return -1
            start = i + 1
    if parts > 1 and put_char(x, b']') < 0:
        return -1
    return put_char(x, b'}')


cdef inline bint is_empty(Ctx* x, Val* v) noexcept nogil:
    """A string or binary value that writes nothing: an element's text the parser leaves out."""
    if v.kind == 0x01:
        return string_units(x.c + v.off, v.size) == 0
    return (v.kind == LITERAL or v.kind == 0x0E) and v.size == 0


cdef inline bint name_is(Ctx* x, Py_ssize_t name, const char* ascii, int n) noexcept nogil:
    cdef const uint8_t* p = x.c + name + 8
    cdef int i
    if u16(x.c + name + 6) != n:
        return False
    for i in range(n):
        if p[2 * i] != <uint8_t>ascii[i] or p[2 * i + 1] != 0:
            return False
    return True


cdef inline int put_name(Ctx* x, Py_ssize_t name) noexcept nogil:
    return put_utf16(x, x.c + name + 8, u16(x.c + name + 6), True)


cdef int data_name(Ctx* x, Node* e) noexcept nogil:
    """The attribute that names a `<Data Name="...">` element, or -1; -2 when it has other attributes."""
    cdef int i
    if e.n_attrs != 1:
        return -2 if e.n_attrs else -1
    i = e.first_attr
    if not name_is(x, x.attrs[i].name, b"Name", 4):
        return -2
    return i


cdef int new_key(Ctx* x, Py_ssize_t start, uint64_t* hashes, Py_ssize_t* offs, int* keys,
                 uint64_t* seen) noexcept nogil:
    """Takes the key just written at `start` into an object's keys; -1 for one met before (the parser
    renames it: not seen written) or too many. `seen`: a bit per hash's top 6 bits, so that most keys are
    new without a look at the others."""
    cdef Py_ssize_t n = x.len - start
    cdef uint64_t a = 0, b = 0, h
    cdef int j
    if n >= 8:
        memcpy(&a, x.out + start, 8)
        memcpy(&b, x.out + x.len - 8, 8)
    else:
        memcpy(&a, x.out + start, n)
    h = (a * 0x9E3779B97F4A7C15ULL) ^ (b * 0xC2B2AE3D27D4EB4FULL) ^ (<uint64_t>n * 0x165667B19E3779F9ULL)
    if seen[0] & (1ULL << (h >> 58)):
        for j in range(keys[0]):
            if hashes[j] == h and memcmp(x.out + offs[j], x.out + start, n) == 0:  # (offs[j] + n <= start)
                return -1
    seen[0] |= 1ULL << (h >> 58)
    if keys[0] >= MAX_KEYS:
        return -1
    hashes[keys[0]] = h
    offs[keys[0]] = start
    keys[0] += 1
    return 0


cdef int put_element(Ctx* x, int index, bint data, bint in_event_data) noexcept nogil:
    """An element's JSON value: null, its text, or an object of `#attributes`, children and `#text`. `data`:
    a named `<Data>` of `<EventData>`, whose value is its text alone, an empty string included;
    `in_event_data`: the element is a child of `<EventData>` (only there does the parser name a `<Data>`
    by its Name, or write a string array as one element's text)."""
    cdef Node* e = &x.nodes[index]
    cdef int kid, text = -1, elems = 0, attrs = 0, i, a, keys = 0
    cdef Py_ssize_t key_off[MAX_KEYS]
    cdef uint64_t key_hash[MAX_KEYS]
    cdef uint64_t seen = 0
    cdef bint under
    cdef Py_ssize_t start
    cdef bint first = True
    kid = e.first_kid
    while kid >= 0:
        if x.nodes[kid].elem:
            elems += 1
        elif not (is_empty(x, &x.nodes[kid].val) and not data):
            if text >= 0:
                return -1  # two text values: joined by the parser, not seen written
            text = kid
        kid = x.nodes[kid].next
    if data:
        if elems or (text >= 0 and (x.nodes[text].val.kind == 0x81
                                    or (x.nodes[text].val.kind == 0x0E and x.nodes[text].val.size == 0))):
            return -1  # arrays and empty binary values of a named <Data>: not seen written
        if text < 0:
            if e.nulls:
                return -1  # empty by a null: not seen written
            return put(x, b'""', 2)  # (`<Data Name="X"/>`)
        return put_value(x, &x.nodes[text].val)
    for i in range(e.first_attr, e.first_attr + e.n_attrs):
        if x.attrs[i].parts > 1:
            return -1
        if x.attrs[i].parts == 1:
            if is_empty(x, &x.attrs[i].val):
                return -1  # an empty attribute: not seen written
            attrs += 1
    if text >= 0 and elems:
        return -1  # mixed content
    if text >= 0 and x.nodes[text].val.kind == 0x81:
        if attrs or not in_event_data or not name_is(x, e.name, b"Data", 4):
            return -1  # elsewhere the parser repeats the element per string, renaming the repeats
        return put_strings(x, &x.nodes[text].val)
    if not attrs and not elems:
        if text < 0:
            return put(x, b"null", 4)
        return put_value(x, &x.nodes[text].val)
    if put_char(x, b'{') < 0:
        return -1
    if attrs:
        if put(x, b'"#attributes":{', 15) < 0:
            return -1
        for i in range(e.first_attr, e.first_attr + e.n_attrs):
            if x.attrs[i].parts == 0:
                continue
            if not first and put_char(x, b',') < 0:
                return -1
            first = False
            start = x.len
            if put_name(x, x.attrs[i].name) < 0:
                return -1
            if new_key(x, start, key_hash, key_off, &keys, &seen) < 0:
                return -1
            if put_char(x, b':') < 0 or put_value(x, &x.attrs[i].val) < 0:
                return -1
        if put_char(x, b'}') < 0:
            return -1
        first = False
    keys = 0
    seen = 0
    under = name_is(x, e.name, b"EventData", 9)
    kid = e.first_kid
    while kid >= 0:
        if x.nodes[kid].elem:
            if not first and put_char(x, b',') < 0:
                return -1
            first = False
            start = x.len
            a = -1
            if under and name_is(x, x.nodes[kid].name, b"Data", 4):
                a = data_name(x, &x.nodes[kid])
                if a == -2:
                    return -1
            if a >= 0:
                if x.attrs[a].parts != 1 or (x.attrs[a].val.kind != 0x01 and x.attrs[a].val.kind != LITERAL):
                    return -1
                if is_empty(x, &x.attrs[a].val) or put_text(x, &x.attrs[a].val, True) < 0:
                    return -1
            elif put_name(x, x.nodes[kid].name) < 0:
                return -1
            if new_key(x, start, key_hash, key_off, &keys, &seen) < 0:
                return -1
            if put_char(x, b':') < 0 or put_element(x, kid, a >= 0, under) < 0:
                return -1
        kid = x.nodes[kid].next
    if text >= 0:
        if put(x, b',"#text":', 9) < 0 or put_value(x, &x.nodes[text].val) < 0:
            return -1
    return put_char(x, b'}')


cdef int record(Ctx* x, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    """The JSON of the record whose binary XML is `start` .. `end`, appended to the output."""
    cdef int root
    x.n_nodes = 0
    x.n_attrs = 0
    x.n_subs = 0
    root = new_node(x, -1, True)
    if instance(x, start, end, root, 0) < 0:
        return -1
    root = x.nodes[0].first_kid
    if root < 0 or x.nodes[root].next >= 0 or not x.nodes[root].elem:
        return -1
    if put_char(x, b'{') < 0 or put_name(x, x.nodes[root].name) < 0 or put_char(x, b':') < 0:
        return -1
    if put_element(x, root, False, False) < 0:
        return -1
    return put_char(x, b'}')


cdef Py_ssize_t _marks[MAX_RECORDS + 1]
cdef bint _ascii[MAX_RECORDS]


cdef bint tables_ok(Ctx* x) noexcept nogil:
    """Whether the chunk header's tables are as the parser needs them, which it loads before any record:
    every name its string table reaches, and every template its template table reaches, whole inside the
    chunk, and each template's tokens of a form this module reads (a table the parser refuses costs it the
    whole chunk). Asked after the records: the templates they expanded are not read again."""
    cdef int i, steps
    cdef Py_ssize_t o
    cdef bint ok
    for i in range(64):
        o = u32(x.c + 128 + 4 * i)
        steps = 0
        while o:
            if o < CHUNK_HEADER or o + 8 > CHUNK or steps > 4096:
                return False
            if o + 8 + 2 * <Py_ssize_t>u16(x.c + o + 6) + 2 > CHUNK:
                return False
            if not utf16_ok(x.c + o + 8, u16(x.c + o + 6)):
                return False
            o = u32(x.c + o)
            steps += 1
    x.checking = True
    ok = templates_ok(x)
    x.checking = False
    return ok


cdef bint templates_ok(Ctx* x) noexcept nogil:
    """`tables_ok`'s templates: each reached whole inside the chunk, and those no record expanded read for
    their form (`x.checking`)."""
    cdef int i, steps, root
    cdef Py_ssize_t o, size
    for i in range(32):
        o = u32(x.c + 384 + 4 * i)
        steps = 0
        while o:
            if o < CHUNK_HEADER or o + 24 > CHUNK or steps > 4096:
                return False
            size = u32(x.c + o + 20)
            if o + 24 + size > CHUNK:
                return False
            if not x.used[o >> 3] & (1 << (o & 7)):  # (a template records expanded was read whole)
                x.n_nodes = 0
                x.n_attrs = 0
                root = new_node(x, -1, True)
                if tokens(x, o + 24, o + 24 + size, root, 0, 0, 0, 2) < 0:
                    return False
            o = u32(x.c + o)
            steps += 1
    return True


cdef bint _busy = False


def chunk_records(const uint8_t[::1] chunk, bint utf8=False):
    """The records of one 64 KiB EVTX chunk as `[(record number, JSON text), ...]`, as the `evtx` parser
    writes them (none for a chunk of zeros); None when the chunk holds anything this does not write exactly
    (the parser reads it). With `utf8`, a text that is not all ASCII comes as its UTF-8 (bytes; always valid:
    a lone surrogate is left to the parser), for a caller that would encode it again (the hunt's
    `_evtx_fast.fields_of`), sparing it the decode and the encode.

    The output buffer is the module's: a call made while another is making its strings (a thread switched
    to by the collector's finalizers, say) gets None too."""
    global _busy
    if _busy or chunk.shape[0] != CHUNK:
        return None
    _busy = True
    try:
        return _chunk_records(&chunk[0], utf8)
    finally:
        _busy = False


cdef object _chunk_records(const uint8_t* c, bint utf8):
    cdef Ctx* x = &_ctx
    cdef Py_ssize_t pos = CHUNK_HEADER, free_space, size, i, n = 0
    cdef uint64_t first, last, number
    cdef list out
    x.c = c
    if memcmp(x.c, b"ElfChnk\x00", 8) != 0:
        # Unused space the parser passes over without a word (files are made ahead of their records); any
        # other bytes there are its error to report.
        return [] if c[0] == 0 and memcmp(c, c + 1, CHUNK - 1) == 0 else None
    first = u64(x.c + 24)
    last = u64(x.c + 32)
    free_space = u32(x.c + 48)
    if free_space < CHUNK_HEADER or free_space > CHUNK or last < first:
        return None
    number = first
    x.len = 0
    memset(x.used, 0, sizeof(x.used))
    _marks[0] = 0
    while pos < free_space:
        if pos + 28 > free_space or u32(x.c + pos) != 0x00002A2A:
            return None
        size = u32(x.c + pos + 4)
        if size < 28 or pos + size > free_space or u32(x.c + pos + size - 4) != size:
            return None
        if u64(x.c + pos + 8) != number or number > last or u64(x.c + pos + 16) >= FILETIME_END:
            return None  # (the parser reads the record header's time too)
        x.ascii = True
        if record(x, pos + 24, pos + size - 4) < 0:
            return None
        _ascii[n] = x.ascii
        n += 1
        _marks[n] = x.len
        number += 1
        pos += size
    if number != last + 1 or not tables_ok(x):
        return None
    out = []
    for i in range(n):
        size = _marks[i + 1] - _marks[i]
        if _ascii[i]:
            text = PyUnicode_New(size, 127)
            memcpy(PyUnicode_DATA(text), x.out + _marks[i], size)
        elif utf8:
            text = PyBytes_FromStringAndSize(x.out + _marks[i], size)
        else:
            text = PyUnicode_DecodeUTF8(x.out + _marks[i], size, NULL)
        out.append((first + i, text))
    return out
