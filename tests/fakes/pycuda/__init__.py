"""Stand-in for pycuda (tests only): the parts of pycuda.driver that clipinspect uses, with
the semantics that catch misuse — a current context is needed per thread for allocations
and streams, async copies run only when their stream is synchronised, async copies need
page-locked host memory, device pointers must be live allocations of sufficient size.
Device memory is host RAM; the 'GPU' identity is set by tests with driver._fake_reset()."""

VERSION = (2024, 1)
VERSION_TEXT = "2024.1"
