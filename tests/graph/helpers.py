"""Small builders for graph tests."""

from graph.catalog import make_args
from graph.spec import Call, CallKind, ModelArch, ModelSpec

ARCH = ModelArch(family="llama", num_layers=2, hidden_size=64, ffn_hidden_size=128, num_heads=4,
                 num_kv_heads=2, vocab_size=64)

KIND_OF = {"generate": CallKind.GENERATE, "logprobs": CallKind.INFERENCE, "values": CallKind.INFERENCE,
           "reward_model": CallKind.INFERENCE, "rule_reward": CallKind.INFERENCE, "sft": CallKind.TRAIN,
           "ppo_actor": CallKind.TRAIN, "ppo_critic": CallKind.TRAIN, "grpo_actor": CallKind.TRAIN}


def model(role, *, trainable=False, value_head=False, rule=None):
    return ModelSpec(role=role, arch=None if rule else ARCH, trainable=trainable, value_head=value_head,
                     rule=rule)


def call(name, role, interface, inputs=(), outputs=(), kind=None, **kw):
    return Call(name=name, model=role, kind=kind or KIND_OF[interface], interface=interface,
                args=make_args(interface, {}), inputs=tuple(inputs), outputs=tuple(outputs), **kw)
