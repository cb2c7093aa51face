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
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from edge_runtime.errors import first_line

Status = Literal["ok", "fail", "info", "skip"]


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report.

    Attributes:
        name: what was checked ("broker", "backend trt", "publisher mqtt", ...).
        status: ok, fail, info (a fact) or skip (absent and not asked for).
        detail: one line saying what was found.
        required: the user asked for it: a fail makes `doctor` exit 1.
        data: machine-readable extras for `--json`.
    """

    name: str
    status: Status
    detail: str
    required: bool = False
    data: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The check as a JSON-ready dict."""
        return asdict(self)


def check_host() -> Check:
    """OS, machine, Python version and CPU count."""
    return Check(
        "host",
        "info",
        f"{platform.system()} {platform.machine()}, python {platform.python_version()}, {os.cpu_count()} CPUs",
    )


def check_onnxruntime() -> Check:
    """ONNX Runtime's version and execution providers (fail when it cannot be imported)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Check("onnxruntime", "fail", f"not importable ({exc}); pip install 'clipinspect[edge]'")
    providers = ort.get_available_providers()
    return Check(
        "onnxruntime",
        "ok",
        f"onnxruntime {ort.__version__}, providers: {', '.join(providers)}",
        data={"version": ort.__version__, "providers": providers},
    )


def check_backends(requested: str | None = None) -> list[Check]:
    """One row per backend (`available_backends()`); `requested` is required to be available.

    Args:
        requested: the backend the user asked for with `--backend`, if any.

    Returns:
        The backend rows (plus a failed one when `requested` is unknown).
    """
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
    """TensorRT and CUDA (pycuda): versions, driver, devices; skip when absent."""
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
        out.append(
            Check(
                "cuda",
                "ok",
                f"pycuda {getattr(pycuda, 'VERSION_TEXT', '?')}, {driver}, devices: {', '.join(devices) or 'none'}",
            )
        )
    except ImportError as exc:
        out.append(Check("cuda", "skip", f"pycuda not importable ({first_line(exc)})"))
    except Exception as exc:  # the driver itself failing (no GPU, wrong driver)
        out.append(Check("cuda", "fail", f"pycuda imported but CUDA init failed: {first_line(exc)}"))
    return out


def check_spinnaker() -> Check:
    """FLIR cameras seen through PySpin (model and serial); skip when PySpin is absent."""
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
        return Check(
            "cameras (Spinnaker)", "ok" if found else "info", ", ".join(found) or "no cameras found", data=found
        )
    except Exception as exc:
        return Check("cameras (Spinnaker)", "fail", f"Spinnaker error: {first_line(exc)}")
    finally:
        if cams is not None:
            cams.Clear()
        if system is not None:
            system.ReleaseInstance()


def gentl_producers() -> list[str]:
    """The GenTL producer files (*.cti) on GENICAM_GENTL64_PATH."""
    paths = os.environ.get("GENICAM_GENTL64_PATH", "")
    out: list[str] = []
    for d in filter(None, paths.split(os.pathsep)):
        out.extend(sorted(glob.glob(os.path.join(d, "*.cti"))))
    return out


def check_gentl() -> Check:
    """GenICam cameras seen through harvesters and the producers on GENICAM_GENTL64_PATH."""
    producers = gentl_producers()
    if not producers:
        return Check("cameras (GenTL)", "skip", "no GenTL producers on GENICAM_GENTL64_PATH")
    try:
        harvesters = importlib.import_module("harvesters.core")
    except ImportError as exc:
        return Check(
            "cameras (GenTL)",
            "info",
            f"producers {', '.join(producers)}; harvesters not importable ({first_line(exc)})",
        )
    h = harvesters.Harvester()
    try:
        for cti in producers:
            h.add_file(cti)
        h.update()
        found = [f"{getattr(d, 'model', '?')} #{getattr(d, 'serial_number', '?')}" for d in h.device_info_list]
        return Check(
            "cameras (GenTL)",
            "ok" if found else "info",
            f"{len(found)} device(s): {', '.join(found) or 'none'} via {', '.join(producers)}",
            data=found,
        )
    except Exception as exc:
        return Check("cameras (GenTL)", "fail", f"harvesters error: {first_line(exc)}")
    finally:
        h.reset()


def check_broker(uri: str, timeout_s: float = 3.0, options: Any = None) -> Check:
    """Connect to the broker through paho-mqtt 2 as the publisher would and wait for CONNACK.

    Args:
        uri: `mqtt(s)://[user[:password]@]host[:port]`.
        timeout_s: the bound on the TCP connect and on the wait for CONNACK, each.
        options: the `publish.options` (PublishOptions or mapping): TLS files and credentials.

    Returns:
        A required Check: ok when the broker accepted the CONNECT; else fail with one line
        (TCP refused, TLS failure, no CONNACK, or the CONNACK reason code).
    """
    from edge_runtime.errors import ClipInspectError
    from edge_runtime.publish.connection import probe_broker
    from edge_runtime.publish.options import PublishOptions

    try:
        opts = options if isinstance(options, PublishOptions) else PublishOptions.from_mapping(options)
        accepted, detail = probe_broker(uri, opts, timeout_s)
    except ClipInspectError as exc:
        return Check("broker", "fail", first_line(exc), required=True)
    return Check("broker", "ok" if accepted else "fail", detail, required=True)


def registry_checks(registry: Any) -> list[Check]:
    """One row per entry of a seam's table (`Registry.availability()`), importing nothing.

    Args:
        registry: a `edge_runtime.registry.Registry` (e.g. edge_runtime.publish.PUBLISHERS).

    Returns:
        Checks named "<seam> <name>": ok with the row's summary, or skip naming what is missing.
    """
    return [
        Check(f"{registry.seam} {row.name}", "ok" if row.available else "skip", row.detail)
        for row in registry.availability()
    ]


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
    return Check(
        "bundle",
        "ok",
        detail + f"; all sha256 match; {signer}",
        required=True,
        data={"manifest_sha256": b.manifest_sha256, "signer_key_id": record.key_id if record else None},
    )


def check_jetson(timeout_s: float = 3.0) -> list[Check]:
    """L4T release and `nvpmodel -q` power mode on a Jetson; skip elsewhere.

    Args:
        timeout_s: the bound on `nvpmodel -q`.

    Returns:
        The Jetson rows.
    """
    out = []
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        out.append(Check("jetson L4T", "info", release.read_text(errors="replace").splitlines()[0].strip()))
    exe = shutil.which("nvpmodel")
    if exe:
        try:
            r = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=timeout_s, check=False)
            text = " ".join((r.stdout or r.stderr).split())
            out.append(
                Check(
                    "jetson power mode",
                    "info" if r.returncode == 0 else "fail",
                    text or f"nvpmodel -q exited {r.returncode}",
                )
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            out.append(Check("jetson power mode", "fail", f"nvpmodel -q failed: {first_line(exc)}"))
    if not out:
        out.append(Check("jetson", "skip", "not a Jetson (no /etc/nv_tegra_release, no nvpmodel)"))
    return out


def run_checks(
    *,
    bundle: str | Path | None = None,
    broker: str | None = None,
    backend: str | None = None,
    timeout_s: float = 3.0,
    trusted_keys: str | Path | None = None,
    publish_options: Any = None,
) -> list[Check]:
    """Run every check this device supports, plus the requested ones.

    Args:
        bundle: also check this bundle (required).
        broker: also connect to this MQTT broker (required).
        backend: fail unless this backend can run here.
        timeout_s: the bound of each network or subprocess probe.
        trusted_keys: check the bundle's signature against these keys.
        publish_options: TLS files and credentials for the broker check.

    Returns:
        The checks, in display order.
    """
    from edge_runtime.publish import PUBLISHERS
    from edge_runtime.sources import SOURCES

    checks = [check_host(), check_onnxruntime()]
    checks += check_backends(backend)
    checks += registry_checks(SOURCES)
    checks += registry_checks(PUBLISHERS)
    checks += check_tensorrt()
    checks += [check_spinnaker(), check_gentl()]
    checks += check_jetson(timeout_s)
    if bundle is not None:
        checks.append(check_bundle(bundle, trusted_keys))
    if broker is not None:
        checks.append(check_broker(broker, timeout_s, publish_options))
    return checks


def failed(checks: list[Check]) -> list[Check]:
    """The required checks that failed (non-empty: `doctor` exits 1)."""
    return [c for c in checks if c.required and c.status == "fail"]
