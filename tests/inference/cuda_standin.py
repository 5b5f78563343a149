"""A stand-in for ``pycuda.driver`` — NOT CUDA — for the TensorRT runner's tests.

Why it exists: pycuda needs an NVIDIA GPU and its driver, which CI and laptops do not
have, yet the TensorRT runner's own logic — sizing buffers, copying between page-locked
host memory and the device, stream order, CUDA context push/pop in worker threads,
freeing — must be tested everywhere. The real thing is exercised by the ``gpu``-marked
test.

"Device" memory is a dict from fake device pointers to byte buffers; the TensorRT
runtime stand-in (``trt_runtime_standin.py``) runs its engine on exactly those bytes.
So a runner that copies the wrong bytes, reads outputs before ``stream.synchronize()``
or calls from a thread without the CUDA context pushed gets wrong numbers or an error,
as it would on a GPU.

Where it differs from the real thing: stream work (copies, execution) runs at
``synchronize()`` in the calling thread (no real asynchrony); async copies insist on
page-locked host memory (CUDA would silently copy synchronously); one CUDA context
stack per thread, modelled on pycuda's.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np


class CudaError(RuntimeError):
    """What the stand-in raises where pycuda would raise ``pycuda.driver.Error``."""


# -- pycuda.driver ------------------------------------------------------------------


@dataclass
class GpuState:
    """Everything the stand-in GPU holds, for tests to inspect."""

    devices: int = 1
    compute_capability: tuple[int, int] = (8, 7)
    init_error: str | None = None
    memory: dict[int, bytearray] = field(default_factory=dict)
    pinned: list[Any] = field(default_factory=list)
    # weak: a stream lives while someone holds it, as a pycuda Stream does
    streams: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)
    retained: int = 0
    pushes: int = 0
    copies_htod: int = 0
    executions: int = 0
    _local: threading.local = field(default_factory=threading.local)

    def stack(self) -> list[Any]:
        """This thread's context stack (pycuda keeps one per thread)."""
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def current(self) -> Any:
        stack = self.stack()
        return stack[-1] if stack else None

    def require_context(self, what: str) -> Any:
        ctx = self.current()
        if ctx is None or not ctx.valid:
            raise CudaError(
                f"{what} failed: invalid device context (no context is current "
                f"on thread {threading.current_thread().name})"
            )
        return ctx

    def live_pinned(self) -> int:
        return sum(1 for block in self.pinned if not block.freed)

    def resolve(self, pointer: Any, nbytes: int, what: str) -> bytearray:
        address = int(pointer)
        if address not in self.memory:
            raise CudaError(f"{what}: {address:#x} is not a live device allocation")
        block = self.memory[address]
        if nbytes > len(block):
            raise CudaError(
                f"{what}: {nbytes} bytes do not fit the {len(block)}-byte "
                f"allocation at {address:#x}"
            )
        return block


def _host_address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def make_cuda(
    devices: int = 1, compute_capability: tuple[int, int] = (8, 7), init_error: str | None = None
) -> Any:
    """A ``pycuda.driver``-like namespace; its ``state`` is the stand-in GPU."""
    state = GpuState(devices, tuple(compute_capability), init_error)
    pointers = itertools.count(0x7F00_0000_0000, 0x1_0000_0000)
    handles = itertools.count(0x5000)

    def init(flags: int = 0) -> None:
        if state.init_error:
            raise CudaError(f"cuInit failed: {state.init_error}")

    class Context:
        def __init__(self) -> None:
            self.valid, self.thread = True, threading.get_ident()

        def push(self) -> None:
            state.stack().append(self)
            state.pushes += 1

        @staticmethod
        def pop() -> None:
            stack = state.stack()
            if not stack:
                raise CudaError("context::pop failed: cannot pop non-current context")
            stack.pop()

        def detach(self) -> None:
            """pycuda: a primary context is released (cuDevicePrimaryCtxRelease) if it is
            current or was made on this thread; from another thread nothing happens."""
            if not self.valid:
                raise CudaError("context::detach failed: cannot detach from invalid context")
            stack = state.stack()
            if stack and stack[-1] is self:
                stack.pop()
                state.retained -= 1
            elif self.thread == threading.get_ident():
                state.retained -= 1
            self.valid = False

    class Device:
        def __init__(self, ordinal: int) -> None:
            if not 0 <= ordinal < state.devices:
                raise CudaError(f"cuDeviceGet failed: invalid device ordinal {ordinal}")
            self.ordinal = ordinal

        @staticmethod
        def count() -> int:
            return state.devices

        def compute_capability(self) -> tuple[int, int]:
            return state.compute_capability

        def name(self) -> str:
            return "Stand-in GPU (not CUDA)"

        def retain_primary_context(self) -> Context:
            state.retained += 1
            return Context()

    class DeviceAllocation:
        """Usable as an int (the device pointer), like pycuda's."""

        def __init__(self, nbytes: int) -> None:
            self.context = state.require_context("cuMemAlloc")
            self.pointer = next(pointers)
            state.memory[self.pointer] = bytearray(b"\xff" * nbytes)  # garbage: NaN floats

        def __int__(self) -> int:
            return self.pointer

        __index__ = __int__

        def free(self) -> None:
            if state.current() is not self.context and self.context.thread != threading.get_ident():
                raise CudaError("cannot activate out-of-thread context")
            if state.memory.pop(self.pointer, None) is None:
                raise CudaError("device allocation freed twice")

    class PagelockedHostAllocation:
        """The ``.base`` of a page-locked array (numpy keeps it alive)."""

        def __init__(self, shape: Any, dtype: Any) -> None:
            state.require_context("cuMemHostAlloc")
            self._array = np.full(np.empty(shape, dtype).nbytes, 0xFF, np.uint8).view(dtype)
            self._array = self._array.reshape(shape)
            self.start = _host_address(self._array)
            self.end = self.start + self._array.nbytes
            self.freed = False
            state.pinned.append(self)

        @property
        def __array_interface__(self) -> dict[str, Any]:
            return self._array.__array_interface__

        def free(self) -> None:
            self.freed = True

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> Any:
        return np.asarray(PagelockedHostAllocation(shape, dtype))

    def _require_pinned(array: np.ndarray, what: str) -> None:
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            raise CudaError(f"{what}: host memory must be a contiguous numpy array")
        start, end = _host_address(array), _host_address(array) + array.nbytes
        for block in state.pinned:
            if block.start <= start and end <= block.end:
                if block.freed:
                    raise CudaError(f"{what}: page-locked host memory used after free")
                return
        raise CudaError(f"{what}: host memory is not page-locked (use pagelocked_empty)")

    class Stream:
        def __init__(self, flags: int = 0) -> None:
            state.require_context("cuStreamCreate")
            self.handle = next(handles)
            self.pending: list[Callable[[], None]] = []
            state.streams[self.handle] = self

        def enqueue(self, work: Callable[[], None]) -> None:
            self.pending.append(work)

        def synchronize(self) -> None:
            state.require_context("cuStreamSynchronize")
            while self.pending:
                self.pending.pop(0)()

    def _submit(stream: Stream | None, work: Callable[[], None]) -> None:
        if stream is None:
            work()
        else:
            stream.enqueue(work)

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Stream | None = None) -> None:
        state.require_context("cuMemcpyHtoDAsync")
        _require_pinned(src, "cuMemcpyHtoDAsync")
        block = state.resolve(dest, src.nbytes, "cuMemcpyHtoDAsync")

        def copy() -> None:  # reads the host memory when the copy runs, as CUDA does
            block[: src.nbytes] = src.tobytes()
            state.copies_htod += 1

        _submit(stream, copy)

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Stream | None = None) -> None:
        state.require_context("cuMemcpyDtoHAsync")
        _require_pinned(dest, "cuMemcpyDtoHAsync")
        block = state.resolve(src, dest.nbytes, "cuMemcpyDtoHAsync")

        def copy() -> None:
            dest.reshape(-1).view(np.uint8)[:] = np.frombuffer(block, np.uint8, dest.nbytes)

        _submit(stream, copy)

    return SimpleNamespace(
        state=state,
        Error=CudaError,
        init=init,
        Device=Device,
        Context=Context,
        Stream=Stream,
        mem_alloc=DeviceAllocation,
        pagelocked_empty=pagelocked_empty,
        memcpy_htod_async=memcpy_htod_async,
        memcpy_dtoh_async=memcpy_dtoh_async,
    )
