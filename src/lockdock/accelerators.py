"""Accelerator kinds: what a flavor's ``accelerator = "…"`` means to lockdock.

A flavor names its kind in ``images/<flavor>/flavor.toml``; everything kind-specific — how
the runtime version is read from a lock, the tag part, the image labels, the device requests
of the gate run and what the gate payload must find — is one small class here. Adding a kind
is one class added to ``KINDS``; nothing else in lockdock compares kind or flavor names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from lockdock.errors import SpecError
from lockdock.installer.lockfile import LockedArtifact

#: ``{name (lower case): artifact}`` of one platform's lock, first entry of each name.
Packages = Mapping[str, LockedArtifact]


def major_minor(version: str) -> str:
    return ".".join(version.split("+", 1)[0].split(".")[:2])


def torch_of(packages: Packages) -> LockedArtifact | None:
    return packages.get("pytorch") or packages.get("torch")


def _local_label(torch: LockedArtifact | None) -> str:
    """``cu128`` of ``2.8.0+cu128``, ``cpu`` of ``+cpu``, ``""`` without one."""
    return torch.version.split("+", 1)[1] if torch and "+" in torch.version else ""


def is_cpu_torch(packages: Packages) -> bool:
    """A PyTorch built for the CPU only: conda build ``cpu_*`` or wheel ``+cpu``."""
    torch = torch_of(packages)
    return torch is not None and (
        (torch.build or "").startswith("cpu") or _local_label(torch) == "cpu"
    )


@dataclass(frozen=True)
class DeviceRequest:
    """What ``docker run`` needs to give the container this kind's devices."""

    gpus: bool = False  # --gpus all (NVIDIA container toolkit)
    devices: tuple[str, ...] = ()  # --device PATH
    groups: tuple[str, ...] = ()  # --group-add NAME


class Accelerator:
    """The CPU kind, and the base of every other: no runtime, no devices."""

    kind: ClassVar[str] = "cpu"
    #: The name tags and labels use for the runtime (``cu13.0``, ``io.lockdock.cuda.version``).
    runtime: ClassVar[str | None] = None

    def runtime_version(self, packages: Packages) -> str | None:
        """``major.minor`` of this kind's runtime as the lock has it; None when absent."""
        return None

    def tag_part(self, version: str | None) -> str:
        return ""

    def labels(self, version: str | None) -> dict[str, str]:
        return {}

    def device_request(self) -> DeviceRequest:
        return DeviceRequest()

    def devcontainer(self) -> dict[str, Any]:
        """What a devcontainer.json adds for this kind's devices (the Dev Containers spec)."""
        request = self.device_request()
        settings: dict[str, Any] = {}
        if request.gpus:
            # The spec's way to ask for a GPU without failing on machines with none.
            settings["hostRequirements"] = {"gpu": "optional"}
        run_args = [f"--device={d}" for d in request.devices]
        run_args += [f"--group-add={g}" for g in request.groups]
        if run_args:
            settings["runArgs"] = run_args
        return settings

    def host_has_devices(self, host: Any) -> bool:
        """Whether the machine running the gates has this kind's devices (``host`` is
        ``shutil``-like: ``which(name)`` and ``os.path.exists``-like ``exists(path)``)."""
        return False

    def expected(self, packages: Packages) -> dict[str, str]:
        """The ``LOCKDOCK_EXPECT_*`` variables of the gate payload (tests/image/gatekit.py)
        for an image of this kind built from ``packages``."""
        return {"LOCKDOCK_EXPECT_ACCELERATOR": self.kind, "LOCKDOCK_EXPECT_CUDA": "none"}


class Cuda(Accelerator):
    kind = "cuda"
    runtime = "cuda"
    #: Minimum Linux driver per CUDA minor (NVIDIA's CUDA Toolkit release notes, table 3).
    MIN_DRIVER: ClassVar[dict[str, str]] = {
        "11.8": "520.61.05",
        "12.0": "525.60.13",
        "12.1": "530.30.02",
        "12.2": "535.54.03",
        "12.3": "545.23.06",
        "12.4": "550.54.14",
        "12.5": "555.42.02",
        "12.6": "560.28.03",
        "12.8": "570.26",
        "12.9": "575.51.03",
        "13.0": "580.65.06",
    }
    #: Minor-version compatibility: the oldest driver of each major.
    MAJOR_MIN_DRIVER: ClassVar[dict[str, str]] = {
        "11": "450.80.02", "12": "525.60.13", "13": "580.65.06",
    }  # fmt: skip

    def runtime_version(self, packages: Packages) -> str | None:
        """conda-forge's ``cuda-version``, else ``cuda-cudart``, else pip's
        ``nvidia-cuda-runtime[-cu1x]`` (CUDA 13 wheels drop the suffix), else the torch
        wheel's local label (``+cu128``). A CPU torch has no CUDA, whatever else is locked."""
        if is_cpu_torch(packages):
            return None
        for name in ("cuda-version", "cuda-cudart"):
            if name in packages:
                return major_minor(packages[name].version)
        for name in sorted(packages):
            if name == "nvidia-cuda-runtime" or name.startswith("nvidia-cuda-runtime-cu"):
                return major_minor(packages[name].version)
        label = _local_label(torch_of(packages))
        digits = label.removeprefix("cu")
        if label.startswith("cu") and digits.isdigit() and len(digits) > 1:
            return f"{digits[:-1]}.{digits[-1]}"
        return None

    def min_driver(self, version: str) -> str | None:
        return self.MIN_DRIVER.get(version) or self.MAJOR_MIN_DRIVER.get(version.split(".")[0])

    def tag_part(self, version: str | None) -> str:
        return f"cu{version}" if version else ""

    def labels(self, version: str | None) -> dict[str, str]:
        driver = self.min_driver(version) if version else None
        return {"io.lockdock.cuda.min-driver": driver} if driver else {}

    def device_request(self) -> DeviceRequest:
        return DeviceRequest(gpus=True)

    def host_has_devices(self, host: Any) -> bool:
        return host.which("nvidia-smi") is not None

    def expected(self, packages: Packages) -> dict[str, str]:
        # An absent CUDA is left unset: the payload then fails "CUDA build expected".
        version = self.runtime_version(packages)
        return {"LOCKDOCK_EXPECT_ACCELERATOR": self.kind,
                **({"LOCKDOCK_EXPECT_CUDA": version} if version else {})}  # fmt: skip


class Rocm(Accelerator):
    kind = "rocm"
    runtime = "rocm"

    def runtime_version(self, packages: Packages) -> str | None:
        """The torch wheel's local label (``+rocm6.2``), else a locked ``rocm-core`` or
        ``hip-runtime-amd``; a CPU torch has none."""
        if is_cpu_torch(packages):
            return None
        label = _local_label(torch_of(packages))
        if label.startswith("rocm"):
            return major_minor(label.removeprefix("rocm"))
        for name in ("rocm-core", "hip-runtime-amd"):
            if name in packages:
                return major_minor(packages[name].version)
        return None

    def tag_part(self, version: str | None) -> str:
        return f"rocm{version}" if version else ""

    def device_request(self) -> DeviceRequest:
        return DeviceRequest(devices=("/dev/kfd", "/dev/dri"), groups=("video",))

    def host_has_devices(self, host: Any) -> bool:
        return bool(host.exists("/dev/kfd"))

    def expected(self, packages: Packages) -> dict[str, str]:
        version = self.runtime_version(packages)
        return {"LOCKDOCK_EXPECT_ACCELERATOR": self.kind, "LOCKDOCK_EXPECT_CUDA": "none",
                **({"LOCKDOCK_EXPECT_ROCM": version} if version else {})}  # fmt: skip


KINDS: dict[str, Accelerator] = {a.kind: a for a in (Accelerator(), Cuda(), Rocm())}


def runtimes() -> tuple[Accelerator, ...]:
    """Every kind that has a runtime (all but cpu)."""
    return tuple(a for a in KINDS.values() if a.runtime)


def accelerator(kind: str, *, source: str = "flavor.toml") -> Accelerator:
    try:
        return KINDS[kind]
    except KeyError:
        raise SpecError(
            f"{source}: unknown accelerator kind {kind!r}; lockdock knows "
            f"{', '.join(sorted(KINDS))} (src/lockdock/accelerators.py)."
        ) from None
