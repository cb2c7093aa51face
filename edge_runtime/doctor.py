"""`clipinspect doctor`: what this device can run, and whether what we need is reachable.

Each check returns a `Check`; `required` ones (those the user asked for: a bundle, a broker,
a backend) make the command exit non-zero when they fail. Optional SDKs that are absent are
reported, not failed. Every probe is bounded in time.
"""

from __future__ import annotations

import glob
import importlib
import os
import platform
import shutil
import socket
import ssl
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from edge_runtime.errors import first_line

Status = Literal["ok", "fail", "info", "skip"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    required: bool = False
    data: Any = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)



def check_host() -> Check:
    return Check("host", "info", f"{platform.system()} {platform.machine()}, python {platform.python_version()}, {os.cpu_count()} CPUs")


def check_onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Check("onnxruntime", "fail", f"not importable ({exc}); pip install 'clipinspect[edge]'")
    providers = ort.get_available_providers()
    return Check("onnxruntime", "ok", f"onnxruntime {ort.__version__}, providers: {', '.join(providers)}", data={"version": ort.__version__, "providers": providers})


def check_backends(requested: str | None = None) -> list[Check]:
    from edge_runtime.backends import available_backends

    out = []
    for info in available_backends():
        req = requested == info.name
        status: Status = "ok" if info.available else ("fail" if req else "skip")
        out.append(Check(f"backend {info.name}", status, info.detail, required=req))
    if requested and requested not in {i.name for i in available_backends()}:
        out.append(Check(f"backend {requested}", "fail", "unknown backend", required=True))
    return out


def check_tensorrt() -> list[Check]:
    out = []
    try:
        trt = importlib.import_module("tensorrt")
        out.append(Check("tensorrt", "ok", f"TensorRT {getattr(trt, '__version__', '?')}"))
    except ImportError as exc:
        out.append(Check("tensorrt", "skip", f"not importable ({first_line(exc)})"))
    try:
        cuda = importlib.import_module("pycuda.driver")
        pycuda = importlib.import_module("pycuda")
        cuda.init()
        drv = cuda.get_driver_version() if hasattr(cuda, "get_driver_version") else None
        driver = f"CUDA driver {drv // 1000}.{(drv % 1000) // 10}" if isinstance(drv, int) else "CUDA driver ?"
        devices = []
        for i in range(cuda.Device.count()):
            dev = cuda.Device(i)
            cc = dev.compute_capability() if hasattr(dev, "compute_capability") else None
            devices.append(f"{dev.name()}" + (f" (sm {cc[0]}.{cc[1]})" if cc else ""))
        out.append(Check("cuda", "ok", f"pycuda {getattr(pycuda, 'VERSION_TEXT', '?')}, {driver}, devices: {', '.join(devices) or 'none'}"))
    except ImportError as exc:
        out.append(Check("cuda", "skip", f"pycuda not importable ({first_line(exc)})"))
    except Exception as exc:  # the driver itself failing (no GPU, wrong driver)
        out.append(Check("cuda", "fail", f"pycuda imported but CUDA init failed: {first_line(exc)}"))
    return out


def check_spinnaker() -> Check:
    try:
        PySpin = importlib.import_module("PySpin")
    except ImportError as exc:
        return Check("cameras (Spinnaker)", "skip", f"PySpin not importable ({first_line(exc)})")
    system = None
    cams = None
    try:
        system = PySpin.System.GetInstance()
        cams = system.GetCameras()
        found = []
        for i in range(cams.GetSize()):
            cam = cams.GetByIndex(i)
            try:
                nodes = cam.GetTLDeviceNodeMap()
                serial = PySpin.CStringPtr(nodes.GetNode("DeviceSerialNumber")).GetValue()
                model = PySpin.CStringPtr(nodes.GetNode("DeviceModelName")).GetValue()
                found.append(f"{model} #{serial}")
            finally:
                del cam
        return Check("cameras (Spinnaker)", "ok" if found else "info", ", ".join(found) or "no cameras found", data=found)
    except Exception as exc:
        return Check("cameras (Spinnaker)", "fail", f"Spinnaker error: {first_line(exc)}")
    finally:
        if cams is not None:
            cams.Clear()
        if system is not None:
            system.ReleaseInstance()


def gentl_producers() -> list[str]:
    paths = os.environ.get("GENICAM_GENTL64_PATH", "")
    out: list[str] = []
    for d in filter(None, paths.split(os.pathsep)):
        out.extend(sorted(glob.glob(os.path.join(d, "*.cti"))))
    return out


def check_gentl() -> Check:
    producers = gentl_producers()
    if not producers:
        return Check("cameras (GenTL)", "skip", "no GenTL producers on GENICAM_GENTL64_PATH")
    try:
        harvesters = importlib.import_module("harvesters.core")
    except ImportError as exc:
        return Check("cameras (GenTL)", "info", f"producers {', '.join(producers)}; harvesters not importable ({first_line(exc)})")
    h = harvesters.Harvester()
    try:
        for cti in producers:
            h.add_file(cti)
        h.update()
        found = [f"{getattr(d, 'model', '?')} #{getattr(d, 'serial_number', '?')}" for d in h.device_info_list]
        return Check("cameras (GenTL)", "ok" if found else "info", f"{len(found)} device(s): {', '.join(found) or 'none'} via {', '.join(producers)}", data=found)
    except Exception as exc:
        return Check("cameras (GenTL)", "fail", f"harvesters error: {first_line(exc)}")
    finally:
        h.reset()


def _mqtt_connect_packet(client_id: str, username: str | None, password: str | None, keepalive: int = 10) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session). Built by hand: the probe needs no client loop."""

    def s(text: str) -> bytes:
        b = text.encode("utf-8")
        return len(b).to_bytes(2, "big") + b

    flags = 0x02
    payload = s(client_id)
    if username is not None:
        flags |= 0x80
        payload += s(username)
        if password is not None:
            flags |= 0x40
            payload += s(password)
    body = s("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + payload
    n, length = len(body), b""
    while True:
        byte, n = n % 128, n // 128
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return bytes([0x10]) + length + body


_CONNACK = {0: "accepted", 1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable", 4: "bad user name or password", 5: "not authorized"}


def check_broker(uri: str, timeout_s: float = 3.0) -> Check:
    """TCP connect, then an MQTT CONNECT answered by CONNACK 0, within `timeout_s` each."""
    name = "broker"
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        return Check(name, "fail", f"bad broker URI: {exc}", required=True)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        return Check(name, "fail", f"broker URI {uri!r} must look like mqtt://host[:port] or mqtts://host[:port]", required=True)
    host = parts.hostname
    port = port or (8883 if parts.scheme == "mqtts" else 1883)
    shown = f"{parts.scheme}://{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        return Check(name, "fail", f"{shown}: TCP connect failed ({exc.strerror or first_line(exc)})", required=True)
    try:
        sock.settimeout(timeout_s)
        if parts.scheme == "mqtts":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        sock.sendall(_mqtt_connect_packet(f"clipinspect-doctor-{os.getpid()}", user, password))
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                break
            reply += chunk
        if len(reply) < 4 or reply[0] != 0x20:
            return Check(name, "fail", f"{shown}: TCP ok but no MQTT CONNACK (got {reply!r})", required=True)
        rc = reply[3]
        if rc != 0:
            return Check(name, "fail", f"{shown}: MQTT CONNECT refused: {_CONNACK.get(rc, f'code {rc}')}", required=True)
        try:
            sock.sendall(b"\xe0\x00")  # DISCONNECT, so the broker does not log an abrupt close
        except OSError:
            pass
        return Check(name, "ok", f"{shown}: TCP + MQTT CONNECT accepted", required=True)
    except (OSError, ssl.SSLError) as exc:
        return Check(name, "fail", f"{shown}: MQTT handshake failed ({first_line(exc)})", required=True)
    finally:
        sock.close()


def check_bundle(path: str | Path, trusted_keys: str | Path | None = None) -> Check:
    """Hashes, and the signature when trusted keys are given or provisioned; names the signer."""
    from edge_runtime.bundle import load_bundle
    from edge_runtime.errors import ClipInspectError
    from edge_runtime.signing import describe_signer, read_signature, resolve_trusted_keys

    trusted = resolve_trusted_keys(trusted_keys)
    try:
        b = load_bundle(path, trusted_keys=trusted)
        record = read_signature(path)
    except ClipInspectError as exc:
        return Check("bundle", "fail", str(exc), required=True)
    m = b.manifest
    precisions = ["fp32"] + [v.precision for v in m.variants]
    engines = [f"{e.precision} for {e.gpu_name} (TensorRT {e.tensorrt_version})" for e in m.engines]
    detail = f"{b.root}: {m.model_id}, {m.preprocess.image_size[1]}x{m.preprocess.image_size[0]}, threshold {m.threshold.value:.4f}, onnx: {', '.join(precisions)}"
    if engines:
        detail += f"; engines: {'; '.join(engines)}"
    signer = describe_signer(b.root) + (f" (trusted: {trusted})" if trusted else " (not checked: no trusted keys)")
    return Check("bundle", "ok", detail + f"; all sha256 match; {signer}", required=True,
                 data={"manifest_sha256": b.manifest_sha256, "signer_key_id": record.key_id if record else None})


def check_jetson(timeout_s: float = 3.0) -> list[Check]:
    out = []
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        out.append(Check("jetson L4T", "info", release.read_text(errors="replace").splitlines()[0].strip()))
    exe = shutil.which("nvpmodel")
    if exe:
        try:
            r = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=timeout_s, check=False)
            text = " ".join((r.stdout or r.stderr).split())
            out.append(Check("jetson power mode", "info" if r.returncode == 0 else "fail", text or f"nvpmodel -q exited {r.returncode}"))
        except (OSError, subprocess.TimeoutExpired) as exc:
            out.append(Check("jetson power mode", "fail", f"nvpmodel -q failed: {first_line(exc)}"))
    if not out:
        out.append(Check("jetson", "skip", "not a Jetson (no /etc/nv_tegra_release, no nvpmodel)"))
    return out


def run_checks(*, bundle: str | Path | None = None, broker: str | None = None, backend: str | None = None, timeout_s: float = 3.0,
               trusted_keys: str | Path | None = None) -> list[Check]:
    checks = [check_host(), check_onnxruntime()]
    checks += check_backends(backend)
    checks += check_tensorrt()
    checks += [check_spinnaker(), check_gentl()]
    checks += check_jetson(timeout_s)
    if bundle is not None:
        checks.append(check_bundle(bundle, trusted_keys))
    if broker is not None:
        checks.append(check_broker(broker, timeout_s))
    return checks


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.required and c.status == "fail"]
