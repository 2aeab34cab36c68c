"""The nominal (theoretical) matmul peak of an x86 CPU, derived from /proc/cpuinfo: CPUs used x clock x FLOPs per
cycle per core of the microarchitecture's FMA units (a fused multiply-add is 2 FLOPs per lane).

What cpuinfo gives: the vendor, family and model (the microarchitecture, hence the number and width of the FMA
units, from the table below), the flags (``avx512f``, ``avx2`` + ``fma``, ``avx512_bf16``, ``amx_bf16``,
``hybrid_cpu``) and ``cpu MHz`` (the clock when read; in a VM usually the host's nominal clock). What it does not
give, and so stays a caveat: the boost clock (higher; AVX-512 loads may run lower), whether virtual CPUs are SMT
siblings sharing one core's FMA units (then half), and, for some parts, how many 512-bit FMA units a core has.
Where the figure cannot be derived the result says "not derivable" with the reason; nothing is guessed.
Stdlib only, pure: tested on fixed cpuinfo texts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Intel family 6 models with two 512-bit FMA units on every part: Knights Landing/Mill, Ice Lake-SP, Sapphire,
# Emerald and Granite Rapids. Other AVX-512 models (Skylake-SP to Cooper Lake: 1 or 2 by SKU; the client parts) are
# not derivable.
INTEL_TWO_FMA512 = {0x57: "Knights Landing", 0x85: "Knights Mill", 0x6A: "Ice Lake-SP", 0x6C: "Ice Lake-D",
                    0x8F: "Sapphire Rapids", 0xCF: "Emerald Rapids", 0xAD: "Granite Rapids", 0xAE: "Granite Rapids-D"}
ZEN5_256 = (range(0x20, 0x30), range(0x60, 0x70))  # mobile Zen 5 (Strix Point, Krackan Point): 256-bit datapath


@dataclass(frozen=True)
class Nominal:
    """The nominal matmul peak in GFLOP/s per precision, with how it was derived; ``gflops`` empty and ``reason``
    set when not derivable."""
    gflops: dict[str, float] = field(default_factory=dict)  # "fp32" (and "bf16" where derivable) -> GFLOP/s
    derivation: str = ""         # e.g. "2 CPUs x 2.60 GHz x 64 FLOP/cycle (AMD Zen 5 ...)"
    caveats: tuple[str, ...] = ()
    reason: str | None = None    # why not derivable
    cpu: str = ""                # cpuinfo's model name

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "caveats": list(self.caveats)}


def cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor's ``key: value`` fields of a /proc/cpuinfo text."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def _microarchitecture(vendor: str, family: int, model: int, flags: set[str]) -> tuple[int, str] | str:
    """(fp32 FLOPs per cycle per core, what it is) or the reason it is not derivable."""
    fma = "fma" in flags and "avx2" in flags
    if vendor == "AuthenticAMD":
        if family == 0x1A:
            if any(model in r for r in ZEN5_256):
                return 32, f"AMD Zen 5 mobile (family 26, model {model:#x}): 2 x 256-bit FMA pipes x 8 fp32 lanes x 2"
            return 64, f"AMD Zen 5 (family 26, model {model:#x}): 2 x 512-bit FMA pipes x 16 fp32 lanes x 2"
        if family == 0x19 and fma:
            return 32, (f"AMD Zen 3/Zen 4 (family 25, model {model:#x}): 2 x 256-bit FMA pipes x 8 fp32 lanes x 2"
                        + (" (Zen 4 runs AVX-512 on them in two halves)" if "avx512f" in flags else ""))
        if family == 0x17 and fma:
            if model >= 0x30:
                return 32, f"AMD Zen 2 (family 23, model {model:#x}): 2 x 256-bit FMA pipes x 8 fp32 lanes x 2"
            return 16, f"AMD Zen/Zen+ (family 23, model {model:#x}): 2 x 128-bit FMA pipes x 4 fp32 lanes x 2"
        return f"AMD family {family} model {model:#x} is not in isobench's table of FMA units"
    if vendor == "GenuineIntel":
        if "hybrid_cpu" in flags:
            return "a hybrid Intel part: its performance and efficiency cores have different FMA units"
        if "avx512f" in flags:
            if family == 6 and model in INTEL_TWO_FMA512:
                return 64, (f"Intel {INTEL_TWO_FMA512[model]} (family 6, model {model:#x}): 2 x 512-bit FMA units x "
                            "16 fp32 lanes x 2")
            return (f"Intel family {family} model {model:#x} with AVX-512: 1 or 2 512-bit FMA units per core, by "
                    "part, which /proc/cpuinfo does not say")
        if fma and family == 6:
            return 32, f"Intel AVX2 + FMA (family 6, model {model:#x}): 2 x 256-bit FMA units x 8 fp32 lanes x 2"
        return f"Intel family {family} model {model:#x} without AVX2 + FMA is not in isobench's table"
    return f"vendor {vendor or 'unknown (no vendor_id: not an x86 CPU)'} is not in isobench's table of FMA units"


def nominal_peak(cpuinfo: str, cpus: int, device: str = "cpu") -> Nominal:
    """The nominal matmul peak of ``cpus`` CPUs of the machine described by ``cpuinfo`` (a /proc/cpuinfo text)."""
    if device != "cpu":
        return Nominal(reason=f"not derivable on {device}: a GPU's nominal peak needs a table of GPU models")
    f = cpuinfo_fields(cpuinfo)
    name, flags = f.get("model name", ""), set(f.get("flags", "").split())
    try:
        family, model, mhz = int(f["cpu family"]), int(f["model"]), float(f["cpu MHz"])
    except (KeyError, ValueError):
        return Nominal(reason="/proc/cpuinfo gives no x86 family, model and clock ('cpu family', 'model', 'cpu MHz')",
                       cpu=name)
    arch = _microarchitecture(f.get("vendor_id", ""), family, model, flags)
    if isinstance(arch, str):
        return Nominal(reason=arch, cpu=name)
    per_cycle, what = arch
    fp32 = cpus * mhz / 1e3 * per_cycle
    gflops, bf16 = {"fp32": fp32}, "bf16: not derivable (no bf16 dot-product instruction: frameworks convert to fp32)"
    if "amx_bf16" in flags:
        bf16 = "bf16: not derivable (AMX tiles, a separate unit whose rate cpuinfo does not give)"
    elif "avx512_bf16" in flags:
        gflops["bf16"] = 2 * fp32
        bf16 = "bf16: 2 x fp32 (avx512_bf16's VDPBF16PS: 2 bf16 products per fp32 lane, if both pipes execute it)"
    caveats = (f"clock: cpuinfo's 'cpu MHz' ({mhz:g} MHz), read once; boost clocks run higher (a measured rate "
               "can then exceed this), sustained AVX-512 loads may run lower",
               "virtual CPUs may be SMT siblings sharing one core's FMA units (then half of this)"
               if "hypervisor" in flags or f.get("siblings") != f.get("cpu cores") else
               "SMT siblings share one core's FMA units: pinning two of them gives half of this",
               bf16)
    return Nominal(gflops, f"{cpus} CPU{'s' * (cpus != 1)} x {mhz / 1e3:.3g} GHz x {per_cycle} FLOP/cycle ({what})",
                   caveats, cpu=name)


def read_nominal(cpus: int, device: str = "cpu", path: str = "/proc/cpuinfo") -> Nominal:
    """:func:`nominal_peak` of this machine; not derivable where ``path`` cannot be read."""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as e:
        return Nominal(reason=f"{path} is not readable ({e.strerror})")
    return nominal_peak(text, cpus, device)
