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
