"""Item id → model position for an Arrow string column, in one compiled pass over its bytes.

Why: the one-member request maps its few hundred item ids (up to ~1,700 on Complete Journey) to model positions. A
Python dict lookup per id costs ~0.3 µs, mostly a cache miss on a 65,803-entry table holding pointers to string
objects, plus the str objects built from the Arrow column first: ~0.2 ms at the median history, ~0.6 ms at the
longest. Here the model's ids are hashed once at load into an open-addressing table of positions (with the ids'
UTF-8 bytes beside it), and a numba loop hashes each input id straight from the Arrow buffers, probes the table and
compares the bytes: the same answer as the dict (exact string equality; a null or unknown id is -1; when the model
lists an id twice, the later position, as a dict built in order keeps), without building a string object.

Inputs that are not Arrow strings (object arrays, string views) return None and the caller keeps the dict path.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _fnv1a(data, start, stop):  # noqa: ANN001 (numba): 64-bit FNV-1a of data[start:stop]
    h = _FNV_OFFSET
    for k in range(start, stop):
        h = (h ^ np.uint64(data[k])) * _FNV_PRIME
    return h


def _same_bytes(a, a0, a1, b, b0, b1):  # noqa: ANN001 (numba)
    if a1 - a0 != b1 - b0:
        return False
    for k in range(a1 - a0):
        if a[a0 + k] != b[b0 + k]:
            return False
    return True


def _build_loop(data, offsets, slots):  # noqa: ANN001 (numba)
    """Insert every id (position p = bytes offsets[p]:offsets[p+1]) into the table `slots` (-1 = empty)."""
    mask = len(slots) - 1
    for p in range(len(offsets) - 1):
        s = np.int64(_fnv1a(data, offsets[p], offsets[p + 1]) & np.uint64(mask))
        while True:
            q = slots[s]
            if q < 0:
                slots[s] = p
                break
            if _same_bytes(data, offsets[q], offsets[q + 1], data, offsets[p], offsets[p + 1]):
                slots[s] = p  # a repeated id: the later position wins (as in a dict built in order)
                break
            s = (s + 1) & mask


def _lookup_loop(data, offsets, valid, start, slots, ids, id_offsets, out):  # noqa: ANN001 (numba)
    """Model position of each input string (Arrow chunk: bytes data[offsets[j]:offsets[j+1]], valid bit
    start + j of the bitmap `valid` when it has one), -1 when null or unknown."""
    mask = len(slots) - 1
    for j in range(len(offsets) - 1):
        if len(valid):
            bit = start + j
            if not (valid[bit >> 3] >> (bit & 7)) & 1:
                out[j] = -1
                continue
        a0, a1 = offsets[j], offsets[j + 1]
        s = np.int64(_fnv1a(data, a0, a1) & np.uint64(mask))
        found = -1
        while True:
            q = slots[s]
            if q < 0:
                break
            if _same_bytes(ids, id_offsets[q], id_offsets[q + 1], data, a0, a1):
                found = q
                break
            s = (s + 1) & mask
        out[j] = found


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The two loops compiled by numba (once per process; cached on disk when the install allows)."""
    from .numba_loops import compile_loops

    def build(jit: Callable[..., Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
        env = dict(globals())
        for h in (_fnv1a, _same_bytes):
            env[h.__name__] = jit(h, env)
        return jit(_build_loop, env), jit(_lookup_loop, env)

    return compile_loops(build, "item lookup loops", error_model="python")


@dataclass(frozen=True)
class ItemTable:
    """The model's item ids as UTF-8 bytes with an open-addressing hash table of their positions."""

    ids: np.ndarray  # uint8: the ids' UTF-8 bytes, concatenated
    offsets: np.ndarray  # int64 (n + 1,)
    slots: np.ndarray  # int64 (power of two ≥ 2n,): position or -1

    def positions(self, values: Any) -> np.ndarray | None:
        """Model position of each value of an Arrow-backed string array (pandas ArrowStringArray), -1 for null
        or unknown ids; None when `values` is not one (the caller looks ids up another way)."""
        chunks = arrow_string_chunks(values)
        if chunks is None:
            return None
        lookup = _compiled()[1]
        out = np.empty(sum(len(c.chunk) for c in chunks), np.int64)
        at = 0
        for c in chunks:
            n = len(c.chunk)
            bitmap = c.chunk.buffers()[0]
            valid = np.frombuffer(bitmap, dtype=np.uint8) if (bitmap is not None and c.chunk.null_count) \
                else np.zeros(0, np.uint8)
            lookup(c.data, c.offsets, valid, c.chunk.offset, self.slots, self.ids, self.offsets, out[at:at + n])
            at += n
        return out


@dataclass(frozen=True)
class StringChunk:
    """One non-empty chunk of an Arrow string array, with its bytes and value offsets as numpy views."""

    chunk: Any  # pyarrow StringArray or LargeStringArray
    data: np.ndarray  # uint8: the chunk's UTF-8 data buffer (shared, not copied)
    offsets: np.ndarray  # int64 (len + 1,): where each of the chunk's values starts and ends in `data`


def arrow_string_chunks(values: Any) -> list[StringChunk] | None:
    """The non-empty chunks of a pandas Arrow-backed string array (string or large_string) as byte buffers and
    offsets, for loops that read ids without building str objects; None when `values` is not one."""
    chunked = getattr(values, "_pa_array", None)
    if chunked is None:
        return None
    import pyarrow as pa

    if not (pa.types.is_string(chunked.type) or pa.types.is_large_string(chunked.type)):
        return None
    wide = pa.types.is_large_string(chunked.type)
    out = []
    for chunk in chunked.chunks:
        n = len(chunk)
        if n == 0:
            continue
        _, off_buf, data_buf = chunk.buffers()
        offsets = np.frombuffer(off_buf, dtype=np.int64 if wide else np.int32)[chunk.offset:chunk.offset + n + 1]
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
        out.append(StringChunk(chunk, data, offsets.astype(np.int64)))
    return out


def item_table(item_ids: np.ndarray) -> ItemTable | None:
    """Hash the model's item ids once (at load); None when numba is unavailable (the caller keeps its dict)."""
    try:
        build = _compiled()[0]
    except Exception:  # noqa: BLE001 - no numba: the dict path
        return None
    # (a failure to compile below is an error in this module, not a missing dependency: it is raised)
    # (surrogatepass: an id that is not valid Unicode gets bytes no Arrow string has, so it never matches)
    encoded = [str(x).encode("utf-8", "surrogatepass") for x in item_ids.tolist()]
    lengths = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy() if encoded else np.zeros(0, np.uint8)
    size = 1 << max(int(2 * len(encoded)).bit_length(), 4)
    slots = np.full(size, -1, np.int64)
    build(ids, offsets, slots)
    table = ItemTable(ids=ids, offsets=offsets, slots=slots)
    try:  # compile the lookup now (model load), not on the first request
        import pyarrow as pa

        table.positions(_ArrowProbe(pa.chunked_array([pa.array(["", None], pa.large_string())])))
    except ImportError:  # pragma: no cover - no pyarrow: no Arrow columns to look up either
        pass
    return table


@dataclass(frozen=True)
class _ArrowProbe:
    """Stands in for a pandas ArrowStringArray (its `_pa_array`) to compile the lookup at load."""

    _pa_array: Any
