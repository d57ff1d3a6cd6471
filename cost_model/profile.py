"""Measured hardware profiles: the JSON file a user keeps and shares.

File format (UTF-8 JSON object; `realloc profile` writes it, `load_hardware` reads it):

    {
      "format": "realloc-profile",          # required, exactly this string
      "version": 1,                         # required
      "name": "my-cluster",                 # optional; defaults to the file's stem
      "base": "a100-80g",                   # optional preset the "hardware" fields override
      "hardware": {                         # HardwareSpec fields (all, or overrides of "base")
        "kind": "cpu-gloo", "devices_per_node": 2,
        "peak_flops": {"fp32": 5e10}, "memory_bytes": 8589934592, ...
      },
      "measured": {"date": "2026-11-21T18:00:00Z",   # optional: when and where it was measured
                   "machine": {"cpus": 2, "workers": 4, ...}},
      "samples": {                          # optional measured samples (cost_model.calibration;
                                            # also contention, decode, optimizer, calls)
        "compute": [{"flops": 1.2e9, "time_s": 0.004, "passes": 1, "dtype": "fp32"}, ...],
        "memory": [{"bytes": 2.5e7, "time_s": 0.003}, ...],
        "collectives": [{"op": "all_reduce", "link": "intra", "group_size": 2,
                         "bytes": 1048576, "time_s": 0.0021}, ...]
      },
      "calibration": {                      # optional fitted rates; fitted from samples if absent
        "flops": {"fp32": 3.1e10}, "layer_overhead_s": 0.0002, "memory_bandwidth": 8e9,
        "link_bandwidth": {"intra": 1.1e9}, "link_latency": {"intra": 0.0007},
        "host_cores": 2.0, "micro_batch_overhead_s": 0.002, "call_overhead_s": {"train": 0.01}, ...
      }
    }

The spec the estimator uses is the hardware section with the calibration applied
(`Profile.spec`). Saving a loaded profile writes the same content back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cost_model.calibrated import Calibration, apply_calibration
from cost_model.hardware import PRESETS, HardwareSpec, preset
from cost_model.samples import Samples
from graph.errors import UserError

FORMAT = "realloc-profile"
VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A hardware spec with the samples measured on it and the rates fitted from them."""

    hardware: HardwareSpec
    """Analytic spec (before calibration)."""
    samples: Samples = field(default_factory=Samples)
    """Measured samples."""
    calibration: Calibration | None = None
    """Fitted rates; None when nothing was measured."""
    base: str | None = None
    """Preset the hardware section overrides, if any."""
    measured: Mapping[str, Any] = field(default_factory=dict)
    """When and where the samples were taken: date (ISO 8601, UTC), machine description."""

    @property
    def spec(self) -> HardwareSpec:
        """The spec to estimate with: hardware with the calibration applied."""
        if self.calibration is None:
            return self.hardware
        return apply_calibration(self.hardware, self.calibration)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "name": self.hardware.name}
        if self.base:
            out["base"] = self.base
        out["hardware"] = self.hardware.to_dict()
        if self.measured:
            out["measured"] = dict(self.measured)
        out["samples"] = self.samples.to_dict()
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        return out


def profile_from_dict(d: dict[str, Any], *, where: str = "profile", default_name: str = "profile") -> Profile:
    """Build a Profile from the file's JSON object, naming whatever is wrong."""
    if d.get("format") != FORMAT:
        raise UserError(f"{where}: 'format' must be {FORMAT!r}, got {d.get('format')!r}")
    if d.get("version") != VERSION:
        raise UserError(f"{where}: 'version' {d.get('version')!r} unsupported; this realloc reads version {VERSION}")
    known = {"format", "version", "name", "base", "hardware", "samples", "calibration", "measured"}
    for key in d:
        if key not in known:
            raise UserError(f"{where}: unknown key {key!r}; known: {', '.join(sorted(known))}")
    base = d.get("base")
    values: dict[str, Any] = preset(base).to_dict() if base else {}
    section = d.get("hardware", {})
    if not isinstance(section, dict):
        raise UserError(f"{where}: 'hardware' must be an object of HardwareSpec fields")
    values.update(section)
    values["name"] = d.get("name") or section.get("name") or default_name
    hardware = HardwareSpec.from_dict(values, where=f"{where}: hardware")
    samples = Samples.from_dict(d.get("samples", {}))
    if "calibration" in d:
        calibration: Calibration | None = Calibration.from_dict(d["calibration"])
    elif samples:
        from cost_model.calibration import (
            fit_calibration,  # numpy: only for a profile without its fit
        )

        calibration = fit_calibration(samples)
    else:
        calibration = None
    measured = d.get("measured", {})
    if not isinstance(measured, dict):
        raise UserError(f"{where}: 'measured' must be an object (date, machine)")
    return Profile(hardware=hardware, samples=samples, calibration=calibration, base=base, measured=measured)


def load_profile(path: str | Path) -> Profile:
    """Read a profile JSON file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"hardware profile {str(p)!r} does not exist; give a preset name "
                         f"({', '.join(PRESETS)}) or a profile JSON file")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"hardware profile {str(p)!r} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(d, dict):
        raise UserError(f"hardware profile {str(p)!r} must hold a JSON object")
    return profile_from_dict(d, where=f"hardware profile {str(p)!r}", default_name=p.stem)


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write a profile JSON file (readable by `load_profile`)."""
    Path(path).write_text(json.dumps(profile.to_dict(), indent=2) + "\n")


def load_hardware(name_or_path: str | Path) -> HardwareSpec:
    """A preset by name, or the calibrated spec of a profile file."""
    text = str(name_or_path)
    if text in PRESETS:
        return PRESETS[text]
    if text.endswith(".json") or Path(text).exists():
        return load_profile(text).spec
    return preset(text)  # raises the ValueError listing presets
