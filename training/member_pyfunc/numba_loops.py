"""Compile a module's numba loops so they call each other compiled (the recs kernels, item lookup and ALS top-k)."""
from __future__ import annotations

import types
from typing import Any, Callable, TypeVar

T = TypeVar("T")
Jit = Callable[[Callable[..., Any], dict[str, Any]], Callable[..., Any]]


def compile_loops(build: Callable[[Jit], T], what: str, *, error_model: str = "numpy") -> T:
    """`build(jit)`, where `jit(fn, env)` compiles a copy of `fn` whose globals are `env`: the loops see the compiled
    versions of their helpers while the module's own globals stay plain Python (the numpy reference paths).

    Tried with numba's on-disk cache first, then in memory (no writable cache location: a read-only install).
    """
    import numba

    for cache in (True, False):
        def jit(fn: Callable[..., Any], env: dict[str, Any], cache: bool = cache) -> Callable[..., Any]:
            copy = types.FunctionType(fn.__code__, env, fn.__name__, fn.__defaults__, fn.__closure__)
            copy.__qualname__, copy.__module__ = fn.__qualname__, fn.__module__
            return numba.njit(cache=cache, nogil=True, error_model=error_model)(copy)

        try:
            return build(jit)
        except RuntimeError:  # no writable cache location: compile in memory
            continue
    raise RuntimeError(f"numba could not compile the {what}")
