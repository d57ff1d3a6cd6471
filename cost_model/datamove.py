"""Moving a data key from the layout of the call that produces it to the consumer's.

Sizes: a key holds `num_sequences(producer)` sequences of `tokens_per_sequence` tokens;
its bytes follow the role the producer's interface gives that output (graph.catalog):
- sequences: int64 token ids, 8 bytes per token, plus two int64 lengths per sequence;
- per-sequence values (rewards): 4 bytes per sequence;
- per-token values (logprobs, values, ...): float32, 4 bytes per token.

Placement follows the executor (runtime.execution.worker): every device of a layout holds a
call's whole result, and each device of the consumer's mesh that is not in the
producer's mesh receives the whole key from one producer device, chosen round-robin
over the producer's mesh in device order. Devices in both meshes receive nothing.
"""

from __future__ import annotations

from collections import Counter

from graph.catalog import get_interface
from graph.placement.layout import Cluster, Layout
from graph.placement.transfer import TransferLoads
from graph.roles import PER_SEQUENCE_ROLES, SEQUENCE_ROLES, input_roles
from graph.spec import Call, CallKind


def num_sequences(call: Call) -> int:
    """Sequences the call processes: a generate call's batch counts prompts, each sampled num_samples times."""
    if call.kind == CallKind.GENERATE:
        return call.batch_size * int(getattr(call.args, "num_samples", 1) or 1)
    return call.batch_size


def side_sequences(call: Call) -> int:
    """Sequences a call trains on besides its main batch: `batch_size` for each further
    sequence-role input (the PPO actor's ptx batch, as the executor sizes it), plus the
    Selective Rehearsal set of a ppo_actor with rehearsal_coef > 0 (at most
    rehearsal_clusters x rehearsal_per_cluster kept rollouts). A train call's compute grows
    by these sequences (forward and backward, same micro-batching). The policy's responses to
    the rehearsal pool (role pool_responses) are what the selection picks from, not trained
    on as a whole: the kept ones are the rehearsal set."""
    extra = [r for r in input_roles(call.interface, call.inputs)[1:] if r in SEQUENCE_ROLES and r != "pool_responses"]
    return call.batch_size * len(extra) + rehearsal_sequences(call)


def rehearsal_sequences(call: Call) -> int:
    """Rollouts a ppo_actor rehearses per step (0 without Selective Rehearsal)."""
    args = call.args
    if call.kind != CallKind.TRAIN or float(getattr(args, "rehearsal_coef", 0.0) or 0.0) <= 0:
        return 0
    return int(args.rehearsal_clusters) * int(args.rehearsal_per_cluster)


def _rehearsal_pool(call: Call) -> int:
    """Pairs the selection reads: the data pool's size (rehearsal_source=data; the call's
    batch when the loader did not set it) or this iteration's rollouts (the call's batch)."""
    args = call.args
    if getattr(args, "rehearsal_source", "rollouts") == "data" and int(getattr(args, "rehearsal_pool_size", 0)) > 0:
        return int(args.rehearsal_pool_size)
    return call.batch_size


def rehearsal_embedding_sequences(call: Call) -> float:
    """Prompts the selection embeds per iteration (a forward of the pool's prompts, every
    rehearsal_every iterations), 0 without Selective Rehearsal."""
    if rehearsal_sequences(call) == 0:
        return 0.0
    return _rehearsal_pool(call) / int(call.args.rehearsal_every)


def rehearsal_scoring_sequences(call: Call) -> float:
    """Whole (prompt, answer) sequences the actor itself forwards per iteration to rank a data
    pool (rehearsal_rank=likelihood: every pair, every rehearsal_every iterations); 0 otherwise
    (rollouts come with their rewards; rehearsal_rank=advantage reads the reward model's
    scores, computed by the `pool_scores` call)."""
    if rehearsal_sequences(call) == 0 or call.args.rehearsal_source != "data":
        return 0.0
    if getattr(call.args, "rehearsal_rank", "likelihood") != "likelihood":
        return 0.0
    return _rehearsal_pool(call) / int(call.args.rehearsal_every)


POOL_INTERFACES = ("pool_scores", "pool_generate")
"""Interfaces that work on the rehearsal pool every `every` iterations and return a cache in between."""


def runs_per_iteration(call: Call) -> float:
    """How often the call's compute runs per iteration: 1, except a `pool_scores` call (scores
    the rehearsal pool) or a `pool_generate` call (the policy's responses to the pool's
    prompts), which work every `every` iterations (the cached result in between)."""
    if call.interface in POOL_INTERFACES:
        return 1.0 / int(call.args.every)
    return 1.0


def key_role(producer: Call, key: str) -> str:
    """The role the producer's interface gives output `key` ("" when it is not an output)."""
    roles = get_interface(producer.interface).outputs
    return dict(zip(producer.outputs, roles)).get(key, "")


def input_role(consumer: Call, key: str) -> str:
    """The role the consumer's interface gives input `key` ("" when it is not an input)."""
    return dict(zip(consumer.inputs, input_roles(consumer.interface, consumer.inputs))).get(key, "")


def key_bytes(producer: Call, consumer: Call, key: str) -> float:
    """Bytes of data key `key` per iteration, as `producer` emits it for `consumer`.

    A key the producer does not output (a dataset key such as `ptx`, which every rank
    builds itself today) is sized by the role the consumer reads it as."""
    n_seq = num_sequences(producer)
    role = key_role(producer, key) or input_role(consumer, key)
    if role in PER_SEQUENCE_ROLES:
        return 4.0 * n_seq
    tokens = max(producer.seq_len, consumer.seq_len)
    if producer.kind == CallKind.GENERATE:
        tokens = producer.prompt_len + (producer.response_len or producer.max_new_tokens)
    if role in SEQUENCE_ROLES:
        return 8.0 * n_seq * max(tokens, 1) + 16.0 * n_seq
    return 4.0 * n_seq * max(tokens, 1)


def dataset_key_bytes(consumer: Call, key: str) -> float:
    """Bytes of dataset key `key` (e.g. `ptx`) per iteration as `consumer` reads it: every
    rank builds the dataset keys itself, so this is memory on each rank of the consumer's
    mesh, not a transfer. Sized by the consumer's input role, its batch and sequence length."""
    role = input_role(consumer, key)
    n_seq = consumer.batch_size
    if role in PER_SEQUENCE_ROLES:
        return 4.0 * n_seq
    if role in SEQUENCE_ROLES:
        return 8.0 * n_seq * max(consumer.seq_len, 1) + 16.0 * n_seq
    return 4.0 * n_seq * max(consumer.seq_len, 1)


def data_flows(producer: Call, consumer: Call, key: str, src: Layout,
               dst: Layout) -> list[tuple[int, int, float]]:
    """(src device, dst device, bytes) flows moving `key` from `src` to `dst`."""
    total = key_bytes(producer, consumer, key)
    senders = src.mesh.devices
    have = set(senders)
    needers = [d for d in dst.mesh.devices if d not in have]
    return [(senders[i % len(senders)], d, total) for i, d in enumerate(needers)]


def data_loads(producer: Call, consumer: Call, key: str, src: Layout, dst: Layout,
               cluster: Cluster) -> tuple[TransferLoads, int]:
    """The loads of `data_flows` (each receiver gets the whole key from one sender), and the
    most sends one sender makes; without listing the flows."""
    total = key_bytes(producer, consumer, key)
    senders = src.mesh.devices
    have = set(senders)
    dpn = cluster.devices_per_node
    sent: Counter = Counter()
    recv: dict[tuple[int, bool], float] = {}
    peers: dict[int, list[int]] = {}
    inter = 0.0
    k = 0
    for d in dst.mesh.devices:
        if d in have:
            continue
        s = senders[k % len(senders)]
        k += 1
        far = s // dpn != d // dpn
        sent[(s, far)] += 1
        recv[(d, far)] = total
        peers.setdefault(d, [0, 0])[far] += 1
        peers.setdefault(s, [0, 0])[far] += 1
        inter += total if far else 0.0
    if k == 0 or total <= 0:
        return TransferLoads(sent={}, recv={}, peers={}, bytes_total=0.0, bytes_inter_node=0.0), 0
    sends: Counter = Counter()
    for (s, _far), n in sent.items():
        sends[s] += n
    return (TransferLoads(sent={x: n * total for x, n in sent.items()}, recv=recv,
                          peers={d: (a, b) for d, (a, b) in peers.items()}, bytes_total=total * k,
                          bytes_inter_node=inter), max(sends.values()))
