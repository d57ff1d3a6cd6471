"""Clusters, device meshes and 3D-parallel layouts: plain data shared by every layer.

Rank order inside a layout follows Megatron's default "tp-dp-pp": tensor-parallel
ranks are adjacent, then data-parallel replicas, then pipeline stages. That order is
the contract between the planner, the transfer plans and the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Cluster:
    """The devices a plan may use: `num_nodes` nodes of `devices_per_node` each."""

    num_nodes: int
    """Number of nodes (machines)."""
    devices_per_node: int
    """Devices (GPUs, or CPU worker processes) per node."""

    def __post_init__(self) -> None:
        if self.num_nodes < 1 or self.devices_per_node < 1:
            raise ValueError(
                f"cluster needs at least one node and one device per node, got "
                f"{self.num_nodes} x {self.devices_per_node}"
            )

    @property
    def num_devices(self) -> int:
        """Total number of devices."""
        return self.num_nodes * self.devices_per_node

    def node_of(self, device: int) -> int:
        """Node index of a global device id."""
        return device // self.devices_per_node


class DeviceIds(tuple):
    """A tuple of device ids that computes its hash once (meshes key many planner caches;
    hashing a 1024-id tuple on every lookup would cost more than the lookup)."""

    def __hash__(self) -> int:
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = self.__dict__["_hash"] = tuple.__hash__(self)
        return cached


@dataclass(frozen=True, kw_only=True)
class DeviceMesh:
    """A set of devices, by global id, sorted; a call runs on exactly one mesh."""

    devices: tuple[int, ...]
    """Global device ids, ascending."""

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError("a device mesh needs at least one device")
        if tuple(sorted(set(self.devices))) != tuple(self.devices):
            raise ValueError(f"device mesh {list(self.devices)} must be ascending without repeats")
        if self.devices[0] < 0:
            raise ValueError("device ids must be >= 0")

    @classmethod
    def span(cls, start: int, size: int) -> DeviceMesh:
        """The contiguous mesh [start, start + size)."""
        return cls(devices=DeviceIds(range(start, start + size)))

    @property
    def size(self) -> int:
        """Number of devices."""
        return len(self.devices)

    def overlaps(self, other: DeviceMesh) -> bool:
        """Whether the two meshes share a device."""
        return not set(self.devices).isdisjoint(other.devices)

    def nodes(self, cluster: Cluster) -> tuple[int, ...]:
        """Nodes the mesh touches."""
        d = self.devices
        if d[-1] - d[0] + 1 == len(d):  # contiguous: every node between the first and the last
            return tuple(range(cluster.node_of(d[0]), cluster.node_of(d[-1]) + 1))
        return tuple(sorted({cluster.node_of(x) for x in d}))

    def __str__(self) -> str:
        d = self.devices
        if d == tuple(range(d[0], d[-1] + 1)):
            return f"[{d[0]}-{d[-1]}]" if len(d) > 1 else f"[{d[0]}]"
        return "[" + ",".join(map(str, d)) + "]"


@dataclass(frozen=True, kw_only=True)
class Layout:
    """A mesh and a dp x tp x pp strategy over it, with micro-batches per step."""

    mesh: DeviceMesh
    """Devices the layout occupies."""
    dp: int
    """Data-parallel degree."""
    tp: int
    """Tensor-parallel degree."""
    pp: int
    """Pipeline-parallel degree."""
    micro_batches: int = 1
    """Micro-batches per call (per data-parallel rank)."""

    def __post_init__(self) -> None:
        for name in ("dp", "tp", "pp", "micro_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"layout {name} must be >= 1, got {getattr(self, name)}")
        if self.dp * self.tp * self.pp != self.mesh.size:
            raise ValueError(
                f"layout dp={self.dp} x tp={self.tp} x pp={self.pp} = "
                f"{self.dp * self.tp * self.pp} does not match mesh {self.mesh} of "
                f"{self.mesh.size} devices"
            )

    @property
    def strategy(self) -> tuple[int, int, int]:
        """(dp, tp, pp)."""
        return (self.dp, self.tp, self.pp)

    def device(self, *, dp_rank: int, tp_rank: int, pp_rank: int) -> int:
        """Global device id holding the given coordinates (tp fastest, then dp, then pp)."""
        if not (0 <= dp_rank < self.dp and 0 <= tp_rank < self.tp and 0 <= pp_rank < self.pp):
            raise IndexError(f"coordinates dp={dp_rank} tp={tp_rank} pp={pp_rank} outside {self}")
        index = (pp_rank * self.dp + dp_rank) * self.tp + tp_rank
        return self.mesh.devices[index]

    def coords(self, device: int) -> tuple[int, int, int]:
        """(dp_rank, tp_rank, pp_rank) of a global device id in this layout."""
        index = self.mesh.devices.index(device)
        tp_rank = index % self.tp
        dp_rank = (index // self.tp) % self.dp
        pp_rank = index // (self.tp * self.dp)
        return dp_rank, tp_rank, pp_rank

    def __str__(self) -> str:
        return f"{self.mesh} dp{self.dp} tp{self.tp} pp{self.pp} mb{self.micro_batches}"
