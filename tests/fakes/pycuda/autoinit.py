"""Stand-in for pycuda.autoinit: initialise the driver and make a context on device 0 current."""

import atexit

from tests.fakes.pycuda import driver as _cuda

_cuda.init()
device = _cuda.Device(0)
context = device.make_context()
atexit.register(context.pop)
