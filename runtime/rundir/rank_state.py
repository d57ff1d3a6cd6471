"""What a rank puts in a training checkpoint and takes back from one, with
torch.distributed.checkpoint (DCP): tensors by global name, resharded on load.

Every tensor is stored as chunks of its global tensor (`runtime.rundir.chunks`), so a
checkpoint written under one plan and world size loads under any other. For every
trained model whose HOME engine (its train call's layout) lives on this rank:

- `ROLE/weights/NAME`: the parameter (this rank's TP shard; DP replicas are written once),
- `ROLE/optim/KEY/NAME`: the distributed optimizer's state of this rank's flat range of
  the parameter (`exp_avg`, `exp_avg_sq`, and `main` when the fp32 main parameter is not
  the weight itself, i.e. bf16 training),
- `ROLE/ema/NAME`: the EMA (fp32) when the model keeps one;

and `rng/RANK/...`: this rank's RNG states. Plain values go to meta.json (`extra`): the
step counter of every trainer (it sets the LR schedule), the optimizer's scalar state
(Adam's `step`), and `engine.state` of every engine (interface state such as the KL
controller and reward normalisation).

Every rank writes its own file in parallel (`__RANK_0.distcp`), streamed tensor by tensor
from the live parameters (no whole-state copy), fsyncs it and hashes it; rank 0 writes
DCP's `.metadata`, then meta.json, and renames the directory into place
(`runtime.rundir.checkpoints`). Replicas of trained models in other layouts are not
saved: the first iteration after a restore refreshes them from the home engine. Models
nobody trains rebuild from their seed or checkpoint.
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import io
import os
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist

from runtime.engine import platform
from runtime.rundir import checkpoints as store
from runtime.rundir.chunks import Piece, flat_blocks, global_pieces

if TYPE_CHECKING:
    from graph.placement.layout import Layout
    from runtime.engine.model_engine import LocalShard, ModelEngine
    from runtime.engine.schedule import Trainer


class Engines(Protocol):
    """The engines of a rank as checkpoints see them (runtime.execution.engines.EngineSet)."""

    homes: Mapping[str, Layout]
    by_key: Mapping[tuple[str, Layout], ModelEngine | None]

    def get(self, role: str, layout: Layout) -> ModelEngine | None: ...


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, torch.Tensor]:
    """This process's RNG states (CPU, CUDA, Megatron's tracker) as flat named tensors."""
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    out = {"cpu": torch.get_rng_state()}
    out.update({f"tracker/{k}": v for k, v in get_cuda_rng_tracker().get_states().items()})
    if platform.has_cuda():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    torch.set_rng_state(state["cpu"])
    tracker = {k.removeprefix("tracker/"): v for k, v in state.items() if k.startswith("tracker/")}
    if tracker:
        get_cuda_rng_tracker().set_states(tracker)
    if "cuda" in state and platform.has_cuda():
        torch.cuda.set_rng_state(state["cuda"])


def engine_key(role: str, layout: Any) -> str:
    return f"{role}@{layout}"


# --------------------------------------------------------------------------- tensors as global chunks


def _sharded(pieces: list[tuple[Piece, torch.Tensor]], global_shape: tuple[int, ...], dtype: torch.dtype,
             rank: int) -> Any:
    """A DCP-writable/readable ShardedTensor whose local shards are the given views."""
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, ShardedTensorMetadata
    from torch.distributed._shard.sharded_tensor.metadata import TensorProperties
    from torch.distributed._shard.sharding_spec import EnumerableShardingSpec

    metas, shards = [], []
    for piece, view in pieces:
        md = ShardMetadata(shard_offsets=list(piece.offsets), shard_sizes=list(piece.sizes),
                           placement=f"rank:{rank}/{view.device}")
        metas.append(md)
        shards.append(Shard(tensor=view, metadata=md))
    size = torch.Size(global_shape)
    # built directly: the public constructors insist that the shards listed cover the whole
    # tensor, which only all ranks' shards together do (DCP checks that when it plans a save)
    st = torch.Tensor._make_wrapper_subclass(ShardedTensor, size, dtype=dtype, layout=torch.strided,
                                             pin_memory=False, requires_grad=False)
    st._sharding_spec = EnumerableShardingSpec(metas)
    st._metadata = ShardedTensorMetadata(shards_metadata=metas, size=size,
                                         tensor_properties=TensorProperties(dtype=dtype))
    st._local_shards = shards
    st._prepare_init()
    return st


def _narrow(t: torch.Tensor, start: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor:
    for d, (s, n) in enumerate(zip(start, sizes)):
        if s or n != t.shape[d]:
            t = t.narrow(d, s, n)
    return t


def _limit(shard: LocalShard) -> int | None:
    return shard.global_shape[shard.spec.dim] if shard.spec.dim is not None else None


def whole_pieces(shard: LocalShard, local: torch.Tensor) -> list[tuple[Piece, torch.Tensor]]:
    """`local` (a tensor shaped like the TP-local parameter) as global chunks with views into it."""
    zeros = (0,) * local.dim()
    pieces = global_pieces(zeros, tuple(local.shape), dim=shard.spec.dim, ranges=shard.ranges, limit=_limit(shard))
    return [(p, _narrow(local, p.local, p.sizes)) for p in pieces]


def flat_pieces(shard: LocalShard, flat: torch.Tensor, start: int, stop: int) -> list[tuple[Piece, torch.Tensor]]:
    """`flat` (elements [start, stop) of the TP-local parameter, row-major) as global chunks."""
    shape = tuple(shard.tensor.shape)
    out = []
    for offsets, sizes, first in flat_blocks(shape, start, stop):
        n = 1
        for s in sizes:
            n *= s
        block = flat[first - start: first - start + n].view(sizes)
        for p in global_pieces(offsets, sizes, dim=shard.spec.dim, ranges=shard.ranges, limit=_limit(shard)):
            rel = tuple(a - b for a, b in zip(p.local, offsets))
            out.append((p, _narrow(block, rel, p.sizes)))
    return out


def _put(out: dict[str, Any], key: str, pieces: list[tuple[Piece, torch.Tensor]], shape: tuple[int, ...],
         dtype: torch.dtype, rank: int) -> None:
    if pieces:
        out[key] = _sharded(pieces, shape, dtype, rank)


def _optimizer_layout(trainer: Trainer) -> tuple[list[str], dict[str, Any]]:
    """(tensor state keys, scalar state) of a trainer's Adam state, the same for every shard."""
    keys: list[str] | None = None
    scalars: dict[str, Any] = {}
    for s in trainer.optimizer_shards():
        state = s.inner.state.get(s.main, {})
        mine = sorted(k for k, v in state.items() if torch.is_tensor(v) and v.numel() == s.main.numel() and v.dim())
        keys = mine if keys is None else keys
        if mine != keys:
            raise AssertionError(f"bug: optimizer shards hold different state keys ({mine} vs {keys})")
        for k, v in state.items():
            if k in mine:
                continue
            value = {"value": v.item(), "dtype": str(v.dtype).removeprefix("torch.")} if torch.is_tensor(v) else {
                "value": v}
            if scalars.setdefault(k, value) != value:
                raise AssertionError(f"bug: optimizer shards disagree on {k!r}")
    return keys or [], scalars


def model_tensors(role: str, engine: ModelEngine, *, rank: int, optim_keys: Iterable[str],
                  with_main: bool) -> dict[str, Any]:
    """Every checkpoint tensor of one home engine on this rank, as views of the live data."""
    out: dict[str, Any] = {}
    shards = engine.named_local_shards()
    for name, shard in shards.items():
        t = shard.tensor
        _put(out, f"{role}/weights/{name}", whole_pieces(shard, t), shard.global_shape, t.dtype, rank)
        if engine.ema is not None:
            e = engine.ema.shadow[name]
            _put(out, f"{role}/ema/{name}", whole_pieces(shard, e), shard.global_shape, e.dtype, rank)
    if engine.trainer is None:
        return out
    by_ptr = {s.tensor.data_ptr(): s for s in shards.values()}
    for s in engine.trainer.optimizer_shards():
        shard = by_ptr.get(s.param.data_ptr())
        if shard is None:
            raise AssertionError("bug: an optimizer shard belongs to no named parameter")
        state = s.inner.state[s.main]
        for key in optim_keys:
            _put(out, f"{role}/optim/{key}/{shard.name}", flat_pieces(shard, state[key], s.start, s.stop),
                 shard.global_shape, state[key].dtype, rank)
        if with_main and not s.aliases_param:
            _put(out, f"{role}/optim/main/{shard.name}", flat_pieces(shard, s.main, s.start, s.stop),
                 shard.global_shape, s.main.dtype, rank)
    return out


def _rng_tensors(rank: int, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"rng/{rank}/{k}": v for k, v in state.items()}


# --------------------------------------------------------------------------- save


def describe(engines: Engines, trained: Iterable[str]) -> dict[str, Any]:
    """This rank's plain checkpoint values: per trained model on it, the trainer's step,
    the optimizer's state keys and scalars, whether it keeps an EMA and separate fp32 main
    params; and the state of every engine it holds."""
    models: dict[str, Any] = {}
    for role in trained:
        engine = engines.get(role, engines.homes[role])
        if engine is None:
            continue
        info: dict[str, Any] = {"layout": str(engines.homes[role]), "ema": engine.ema is not None}
        if engine.trainer is not None:
            keys, scalars = _optimizer_layout(engine.trainer)
            info.update(step=engine.trainer.step, optim_keys=keys, optim_scalars=scalars,
                        main=any(not s.aliases_param for s in engine.trainer.optimizer_shards()))
        models[role] = info
    states = {engine_key(role, layout): dict(engine.state)
              for (role, layout), engine in engines.by_key.items() if engine is not None and engine.state}
    return {"models": models, "engine_state": states}


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    models: dict[str, Any] = {}
    states: dict[str, Any] = {}
    for part in parts:
        for role, info in part["models"].items():
            if models.setdefault(role, info) != info:
                raise AssertionError(f"bug: ranks disagree on the checkpoint state of {role!r}")
        for key, state in part["engine_state"].items():
            states.setdefault(key, state)
    return {"models": models, "engine_state": states}


def state_dict(engines: Engines, trained: Iterable[str], info: Mapping[str, Any], *, rank: int,
               rng: bool = True) -> dict[str, Any]:
    """The DCP state dict of this rank (views of live tensors, nothing copied)."""
    out: dict[str, Any] = {}
    for role in trained:
        engine = engines.get(role, engines.homes[role])
        if engine is None:
            continue
        m = info["models"][role]
        out.update(model_tensors(role, engine, rank=rank, optim_keys=m.get("optim_keys", ()),
                                 with_main=bool(m.get("main"))))
    if rng:
        out.update(_rng_tensors(rank, rng_state()))
    return out


def _write(state: dict[str, Any], path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    writer = dcp.FileSystemWriter(str(path), single_file_per_rank=True, sync_files=True, thread_count=1,
                                  overwrite=True)
    dcp.save(state, storage_writer=writer)


def own_files(path: Path, rank: int) -> list[str]:
    """The files DCP wrote for `rank` (and `.metadata` for rank 0)."""
    names = [os.path.basename(p) for p in glob.glob(str(path / f"__{rank}_*.distcp"))]
    return sorted(names) + ([".metadata"] if rank == 0 else [])


def save_checkpoint(root: str | Path, iteration: int, engines: Engines, trained: list[str], *, rank: int,
                    world_size: int, fingerprint: Mapping[str, Any], layouts: Mapping[str, str], keep: int,
                    write: Callable[[dict[str, Any], Path], None] = _write) -> Path | None:
    """Write checkpoint `iteration` (world-collective); its path on rank 0, None elsewhere.

    A failure on any rank (e.g. a full disk) raises on every rank and leaves the temporary
    directory uncommitted: the previous checkpoints stay as they were.
    """
    root = Path(root)
    if rank == 0:
        store.begin(root, iteration)
    dist.barrier()
    tmp = store.temp_dir(root, iteration)
    mine = describe(engines, trained)
    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, mine)
    info = _merge(parts)
    from torch.distributed.checkpoint.api import CheckpointException

    error = None
    try:
        write(state_dict(engines, trained, info, rank=rank), tmp)
        entries = {name: store.file_entry(tmp / name) for name in own_files(tmp, rank)}
    except OSError as exc:
        error, entries = f"{type(exc).__name__}: {exc}", {}
    except CheckpointException as exc:  # DCP gathers every rank's failure and raises it on all
        error, entries = _first_failure(exc), {}
    results: list[Any] = [None] * world_size
    dist.all_gather_object(results, (error, entries))
    failed = next((e for e, _ in results if e is not None), None)
    path = None
    if rank == 0:
        if failed is None:
            files = {n: e for _, part in results for n, e in part.items()}
            meta = store.CheckpointMeta(
                iteration=iteration, world_size=world_size, data_position=iteration,
                fingerprint=dict(fingerprint), layouts=dict(layouts), files=files, extra=info)
            try:
                path = store.commit(root, meta, keep=keep)
            except OSError as exc:  # meta.json itself did not fit
                failed = f"{type(exc).__name__}: {exc}"
        if failed is not None:  # give the space back; nothing resumes from an uncommitted directory
            store.discard(tmp)
    box = [failed]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise store.CheckpointWriteError(
            f"writing checkpoint {store.checkpoint_name(iteration)} under {str(root)!r} failed ({box[0]}); the "
            "previous checkpoints are intact: free disk space (or set train.run_dir elsewhere) and resume "
            "with train.resume=true")
    return path


def _first_failure(exc: Any) -> str:
    """'OSError: ... (rank R)' of the first rank a DCP CheckpointException names."""
    for r, failure in sorted(exc.failures.items()):
        cause = failure[0] if isinstance(failure, tuple) else failure
        return f"{type(cause).__name__}: {cause} (rank {r})"
    return " ".join(str(exc).split())


# --------------------------------------------------------------------------- restore


def _prepare_optimizer(role: str, engine: ModelEngine, saved: Mapping[str, Any],
                       make_trainer: Callable[[str, ModelEngine], Trainer]) -> None:
    """A trainer for `engine` with zeroed Adam state of the saved keys, ready to be filled."""
    if engine.trainer is None:
        engine.trainer = make_trainer(role, engine)
    trainer = engine.trainer
    for s in trainer.optimizer_shards():
        old = s.inner.state.get(s.main, {})
        state: dict[str, Any] = {}
        for k in saved["optim_keys"]:  # reuse a live tensor (no second copy); padding rows stay zero
            t = old.get(k)
            ok = torch.is_tensor(t) and t.shape == s.main.shape and t.dtype == s.main.dtype
            state[k] = t.zero_() if ok else torch.zeros_like(s.main)
        for k, v in saved["optim_scalars"].items():
            state[k] = torch.tensor(v["value"], dtype=getattr(torch, v["dtype"])) if "dtype" in v else v["value"]
        s.inner.state[s.main] = state
    trainer.step = int(saved["step"])


def _tied_from_embedding(state: dict[str, Any], saved: set[str]) -> None:
    """A tied output layer the checkpoint lacks (it was written with pp = 1, where the output
    layer is the embedding) is read from the embedding's key."""
    for key in [k for k in state if k.endswith("/output_layer.weight") and k not in saved]:
        source = key.removesuffix("output_layer.weight") + "embedding.word_embeddings.weight"
        if source in saved and source not in state:
            state[source] = state.pop(key)


def restore(path: str | Path, meta: store.CheckpointMeta, engines: Engines, trained: Iterable[str],
            make_trainer: Callable[[str, ModelEngine], Trainer], *, rank: int, world_size: int) -> None:
    """Load checkpoint `path` into this rank's engines, whatever plan and world size wrote it:
    weights, a trainer with the optimizer state, the EMA, engine states; the RNG states
    too when the world size is the same (world-collective)."""
    import torch.distributed.checkpoint as dcp

    trained = list(trained)
    saved_models = meta.extra["models"]
    reload: list[ModelEngine] = []
    for role in trained:
        engine = engines.get(role, engines.homes[role])
        if engine is None:
            continue
        if role not in saved_models:
            raise store.CheckpointError(f"checkpoint {Path(path).name} holds no state of model {role!r}; "
                                        "resume with the experiment that wrote it")
        saved = saved_models[role]
        if saved["ema"] != (engine.ema is not None):
            raise store.CheckpointError(
                f"checkpoint {Path(path).name} {'has' if saved['ema'] else 'lacks'} an EMA of {role!r} but this "
                "run's train.ema_decay/ema_models say otherwise; resume with the same EMA settings")
        if "step" in saved:
            _prepare_optimizer(role, engine, saved, make_trainer)
            if not saved["main"] and any(not s.aliases_param for s in engine.trainer.optimizer_shards()):
                reload.append(engine)  # fp32 checkpoint, bf16 run: main params from the weights
    info = {"models": {r: {**m, "main": m.get("main", False)} for r, m in saved_models.items()}}
    state = state_dict(engines, trained, info, rank=rank, rng=False)
    same_world = meta.world_size == world_size
    rng = _rng_tensors(rank, {k: v.clone() for k, v in rng_state().items()}) if same_world else {}
    state.update(rng)
    reader = _dcp_reader()(str(path))
    _tied_from_embedding(state, set(reader.read_metadata().state_dict_metadata))
    dcp.load(state, storage_reader=reader)
    for engine in reload:
        engine.weights_changed()
    states = meta.extra.get("engine_state", {})
    by_role = {role: states.get(engine_key(role, saved_models[role]["layout"]), {}) for role in saved_models}
    for (role, layout), engine in engines.by_key.items():
        if engine is not None:  # another plan: a home engine takes its model's home state
            home = role in engines.homes and engines.get(role, engines.homes[role]) is engine
            engine.state.clear()
            engine.state.update(states.get(engine_key(role, layout), by_role.get(role, {}) if home else {}))
    if same_world:
        set_rng_state({k.removeprefix(f"rng/{rank}/"): v for k, v in rng.items()})


class _Slice(io.RawIOBase):
    """Bytes [offset, offset + length) of an open file, as a seekable file of their own."""

    def __init__(self, fh: Any, offset: int, length: int) -> None:
        super().__init__()
        self.fh, self.offset, self.length, self.pos = fh, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.length}[whence]
        self.pos = min(max(base + pos, 0), self.length)
        return self.pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.length - self.pos)
        if n <= 0:
            return 0
        self.fh.seek(self.offset + self.pos)
        got = self.fh.readinto(memoryview(b)[:n])
        self.pos += got
        return got


def _data_span(fh: Any, offset: int, length: int) -> tuple[int, int] | None:
    """(file offset, bytes) of the one tensor record inside a torch.save archive stored at
    [offset, offset + length) of `fh`, when it is stored uncompressed; None otherwise."""
    try:
        with zipfile.ZipFile(_Slice(fh, offset, length)) as zf:
            data = [i for i in zf.infolist() if "/data/" in i.filename]
            order = [i for i in zf.infolist() if i.filename.endswith("/byteorder")]
            if len(data) != 1 or data[0].compress_type != zipfile.ZIP_STORED:
                return None
            if order and zf.read(order[0]).decode() != sys.byteorder:
                return None
            info = data[0]
        fh.seek(offset + info.header_offset)
        header = fh.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
        return offset + info.header_offset + 30 + name_len + extra_len, info.file_size
    except (zipfile.BadZipFile, OSError, KeyError, ValueError):
        return None


def _dcp_reader() -> type:
    import torch.distributed.checkpoint as dcp

    class DirectReader(dcp.FileSystemReader):
        """DCP's FileSystemReader, reading a whole stored chunk straight into a contiguous
        target tensor (one copy from the page cache; the stock reader `torch.load`s every
        chunk into a new tensor, then copies that). Anything else takes the stock path."""

        def read_data(self, plan: Any, planner: Any) -> Any:
            from torch.distributed.checkpoint.planner import LoadItemType

            rest = []
            by_file: dict[str, list[Any]] = {}
            for req in plan.items:
                md = self.storage_data[req.storage_index]
                if req.type == LoadItemType.TENSOR and not md.transform_descriptors and not any(req.storage_offsets):
                    by_file.setdefault(md.relative_path, []).append(req)
                else:
                    rest.append(req)
            for relative, reqs in by_file.items():
                reqs.sort(key=lambda r: self.storage_data[r.storage_index].offset)
                with open(os.path.join(str(self.path), relative), "rb", buffering=0) as fh:
                    for req in reqs:
                        if not self._direct(fh, req, planner):
                            rest.append(req)
            if rest:
                return super().read_data(dataclasses.replace(plan, items=rest), planner)
            from torch.futures import Future

            fut: Future[None] = Future()
            fut.set_result(None)
            return fut

        def _direct(self, fh: Any, req: Any, planner: Any) -> bool:
            md = self.storage_data[req.storage_index]
            target = planner.resolve_tensor(req).detach()
            stored = planner.metadata.state_dict_metadata[req.storage_index.fqn]
            nbytes = target.numel() * target.element_size()
            if (target.device.type != "cpu" or not target.is_contiguous() or target.dtype != stored.properties.dtype
                    or tuple(target.shape) != tuple(req.lengths)):
                return False
            span = _data_span(fh, md.offset, md.length)
            if span is None or span[1] != nbytes:  # not the whole stored chunk
                return False
            start, _ = span
            if nbytes:
                view = memoryview((ctypes.c_char * nbytes).from_address(target.data_ptr())).cast("B")
                fh.seek(start)
                done = 0
                while done < nbytes:
                    got = fh.readinto(view[done:])
                    if not got:
                        raise OSError(f"{md.relative_path}: unexpected end of file at {start + done}")
                    done += got
            planner.commit_tensor(req, target)
            return True

    return DirectReader


def read_global(path: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """Every tensor of checkpoint `path` whose key starts with `prefix` (e.g. 'actor/weights/'),
    whole, by the rest of its key; in this process, without a process group (for export
    and inspection: it holds the selected tensors in memory)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = _dcp_reader()(str(path))
    md = reader.read_metadata()
    state = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype)
             for k, v in md.state_dict_metadata.items()
             if k.startswith(prefix) and isinstance(v, TensorStorageMetadata)}
    if state:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
            dcp.load(state, storage_reader=reader, no_dist=True)
    return {k.removeprefix(prefix): v for k, v in state.items()}
