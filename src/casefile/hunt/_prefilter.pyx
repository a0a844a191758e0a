# cython: language_level=3, boundscheck=False, wraparound=False
"""`BatchHunter._hits`'s loop over a partition's anchored fields, in C: for each field the plan anchors, its
value's owner bits from the memo (or `miss`), OR-ed together.

The loop runs for every field every record's plan anchors (about seven a record on the corpus); compiled as
Python it spends most of its time in generic method calls (`dict.get`) and tuple unpacking. It is exactly
`vector.BatchHunter._field_hits`, which stands in for it without a build (and which tests hold it to).

Cython proper, not Python: without a C compiler there is no build, and the hunt takes the Python loop.
"""

from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM

from casefile.hunt.evaluate import _as_str

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL
    Py_ssize_t Py_SIZE(object o)


def field_hits(list anchors, dict fields, dict folded, object view, object hunter):
    """Owner bits of the anchors on the event's fields. `anchors`: (name, folded name, field anchors, memo,
    negated bits) per field; `hunter._miss(fa, value, memo)` gives (and remembers) a string value's bits the
    memo lacks, `hunter._list_bits(fa, name, value, view, memo)` a list value's (looked up only then)."""
    cdef object out = 0
    cdef PyObject* p
    cdef tuple entry
    for entry in anchors:
        p = PyDict_GetItemWithError(fields, <object>PyTuple_GET_ITEM(entry, 0))
        if p == NULL:
            p = PyDict_GetItemWithError(folded, <object>PyTuple_GET_ITEM(entry, 1))
            if p == NULL:  # missing: every test on it is false, so its negations hold
                neg = <object>PyTuple_GET_ITEM(entry, 4)
                if Py_SIZE(neg):
                    out = out | neg
                continue
            p = PyDict_GetItemWithError(fields, <object>p)  # the name it folds from
            if p == NULL:  # a folded-name table of other fields: the caller's mistake
                raise KeyError(<object>PyTuple_GET_ITEM(entry, 1))
        v = <object>p
        if type(v) is not str:
            if isinstance(v, (list, tuple)):
                bits = hunter._list_bits(
                    <object>PyTuple_GET_ITEM(entry, 2), <object>PyTuple_GET_ITEM(entry, 0), v, view,
                    <object>PyTuple_GET_ITEM(entry, 3),
                )
                if Py_SIZE(bits):
                    out = out | bits
                continue
            v = _as_str(v)
        p = PyDict_GetItemWithError(<dict>PyTuple_GET_ITEM(entry, 3), v)
        if p == NULL:
            bits = hunter._miss(<object>PyTuple_GET_ITEM(entry, 2), v, <object>PyTuple_GET_ITEM(entry, 3))
        else:
            bits = <object>p
        if Py_SIZE(bits):  # most values hit nothing: 0, which leaves `out` as it is
            out = out | bits
    return out
