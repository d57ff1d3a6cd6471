"""Non-blocking point-to-point objects (runtime.execution.p2p), on 2 gloo processes."""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    from runtime.execution.p2p import ObjectSender, recv_object

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=20))
    try:
        sender, peer = ObjectSender(), 1 - rank
        # both ranks send before either receives: with blocking sends (send_object_list) each
        # would wait for the other to take its object, a deadlock; these return at once
        first = {"rank": rank, "t": torch.arange(5) * (rank + 1)}
        sender.send(first, (peer,))
        sender.send(("second", rank), (peer,))
        # a reallocation between the two ranks while the payloads are in flight: its tag-0
        # messages must not take the payloads' bytes (gloo matches by source and tag)
        mine, theirs = torch.full((7,), float(rank)), torch.empty(7)
        works = [dist.isend(mine, dst=peer), dist.irecv(theirs, src=peer)]
        for w in works:
            w.wait()
        got = [recv_object(peer), recv_object(peer)]
        sender.wait()
        assert theirs.tolist() == [float(peer)] * 7
        assert not sender.pending
        Path(out, f"rank{rank}.json").write_text(json.dumps(
            {"first_rank": got[0]["rank"], "first_t": got[0]["t"].tolist(), "second": list(got[1])}))
    finally:
        dist.destroy_process_group()


def test_objects_arrive_in_order_past_other_messages_and_senders_do_not_wait(tmp_path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        peer = 1 - rank
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == {"first_rank": peer, "first_t": [i * (peer + 1) for i in range(5)], "second": ["second", peer]}


def _slab_worker(rank: int, port: int, out: str) -> None:
    from runtime.execution.p2p import SLAB_BYTES, ObjectSender, SlabReceiver, early_receives, slab_frames

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=20))
    try:
        # the frames: one slab for a small object, a slab and the rest for a large one
        head, rest = slab_frames(b"abc")
        assert head.numel() == SLAB_BYTES and rest is None
        head, rest = slab_frames(bytes(SLAB_BYTES))
        assert rest is not None and rest.numel() == 8  # the 8-byte size takes room in the slab
        assert early_receives()
        big = torch.arange(3 * SLAB_BYTES // 8, dtype=torch.int64) * (rank + 1)  # 3 slabs' worth
        peer = 1 - rank
        if rank == 0:
            sender = ObjectSender(slab=True)
            sender.send({"small": 1}, (1,))
            sender.send(big, (1,))
            sender.send(("last", 3), (1,))
            dist.send(torch.full((4,), 7.0), dst=1)  # tag 0, as a reallocation's, in between
            sender.send("after", (1,))
            sender.wait()
            Path(out, "rank0.json").write_text(json.dumps({"pending": len(sender.pending)}))
        else:
            receiver = SlabReceiver()
            for _ in range(3):  # posted before the sender sends anything
                receiver.post(peer)
            assert receiver.outstanding() == 3
            other = torch.empty(4)
            dist.recv(other, src=peer)  # the tag-0 message does not take a posted slab
            got = [receiver.recv(peer) for _ in range(3)]
            assert receiver.outstanding() == 0
            after = receiver.recv(peer)  # not posted: received at once
            Path(out, "rank1.json").write_text(json.dumps({
                "small": got[0], "big_equal": bool(torch.equal(got[1], torch.arange(3 * SLAB_BYTES // 8) * 1)),
                "last": list(got[2]), "other": other.tolist(), "after": after}))
    finally:
        dist.destroy_process_group()


def test_slab_receives_posted_early_take_each_object_in_order(tmp_path) -> None:
    """Slab framing (runtime.execution.p2p): objects smaller and larger than a slab arrive whole
    and in order, through receives posted before the sends and one that was not posted,
    past a message of another tag."""
    mp.spawn(_slab_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    assert json.loads((tmp_path / "rank0.json").read_text()) == {"pending": 0}
    assert json.loads((tmp_path / "rank1.json").read_text()) == {
        "small": {"small": 1}, "big_equal": True, "last": ["last", 3], "other": [7.0] * 4, "after": "after"}
