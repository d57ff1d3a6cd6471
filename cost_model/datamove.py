"""Moving a data key from the layout of the call that produces it to the consumer's.

Sizes: a key holds `num_sequences(producer)` sequences of `tokens_per_sequence` tokens.
Its bytes per token follow its name (the graph's keys are plain names):
- names with "ids" (token ids): int64, 8 bytes per token;
- names with "mask": bool, 1 byte per token;
- per-sequence scalars ("reward", "score", "seqlen", "advantage_seq"): 4 bytes per sequence;
- anything else (logprobs, values, advantages, ...): float32, 4 bytes per token.

Placement: the producer leaves DP rank i's share on its last pipeline stage, TP rank
0; the consumer needs DP rank j's share on every device of its first and last stage.
Shares are token-balanced contiguous fractions: rank i of dp holds [i/dp, (i+1)/dp)
of the batch's tokens, so the bytes from source i to destination j are the overlap
of the two fractions. A destination that already holds a share locally receives nothing.
"""

from __future__ import annotations

from cost_model.layout import Layout
from graph.spec import Call, CallKind

SEQUENCE_SCALARS = ("reward", "score", "seqlen", "advantage_seq")


def num_sequences(call: Call) -> int:
    """Sequences the call processes: a generate call's batch counts prompts, each sampled num_samples times."""
    if call.kind == CallKind.GENERATE:
        return call.batch_size * int(getattr(call.args, "num_samples", 1) or 1)
    return call.batch_size


def key_bytes(producer: Call, consumer: Call, key: str) -> float:
    """Bytes of data key `key` per iteration, as `producer` emits it for `consumer`."""
    n_seq = num_sequences(producer)
    name = key.lower()
    if any(s in name for s in SEQUENCE_SCALARS):
        return 4.0 * n_seq
    tokens = max(producer.seq_len, consumer.seq_len)
    if producer.kind == CallKind.GENERATE:
        tokens = producer.prompt_len + (producer.response_len or producer.max_new_tokens)
    per_token = 8.0 if "ids" in name else 1.0 if "mask" in name else 4.0
    return per_token * n_seq * max(tokens, 1)


def data_flows(producer: Call, consumer: Call, key: str, src: Layout,
               dst: Layout) -> list[tuple[int, int, float]]:
    """(src device, dst device, bytes) flows moving `key` from `src` to `dst`."""
    total = key_bytes(producer, consumer, key)
    stages = sorted({0, dst.pp - 1})
    flows = []
    for i in range(src.dp):
        s_lo, s_hi = i / src.dp, (i + 1) / src.dp
        sender = src.device(dp_rank=i, tp_rank=0, pp_rank=src.pp - 1)
        for j in range(dst.dp):
            share = min(s_hi, (j + 1) / dst.dp) - max(s_lo, j / dst.dp)
            if share <= 0:
                continue
            for stage in stages:
                for t in range(dst.tp):
                    receiver = dst.device(dp_rank=j, tp_rank=t, pp_rank=stage)
                    if receiver != sender:
                        flows.append((sender, receiver, share * total))
    return flows
