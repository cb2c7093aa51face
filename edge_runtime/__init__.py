"""clipinspect edge runtime: everything that runs on the device.

Imports only numpy, opencv, onnxruntime, paho-mqtt and PyYAML (plus, lazily, the vendor SDKs
tensorrt, pycuda, PySpin, harvesters). Desktop packages may import this one, never the reverse.
"""

__version__ = "0.1.0"
