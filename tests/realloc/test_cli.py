"""The command line: output, exit codes, one-line errors, and the JSON report."""

import json
import subprocess
import sys

import pytest

from realloc.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,message", [
    (["validate", "ppo_tiny", "graph.batch_sise=3"], "did you mean 'graph.batch_size'"),
    (["validate", "missing.yaml"], "experiment 'missing.yaml' not found"),
    (["plan", "ppo_tiny", "graph.template=nope", "--dry-run"], "unknown template 'nope'"),
    (["graph", "ppo_tiny", "models.actor.trainable=false"], "is not trainable"),
    (["validate"], "validate needs an experiment"),
    (["validate", "ppo_tiny", "stray"], "unexpected argument 'stray'"),
    (["graph", "ppo_tiny", "--out", "/nonexistent/dir/g.png"], "does not exist"),
    (["keys", "clustr"], "unknown config section 'clustr'"),
])
def test_errors_are_one_line_with_exit_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("realloc: error: ")
    assert message in lines[0]
    assert "Traceback" not in err


def test_run_refuses_bad_resources_before_any_work(capsys, tmp_path):
    import socket

    import torch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run_cli(capsys, "run", "ppo_tiny", f"cluster.port={port}", f"train.run_dir={tmp_path / 'r'}")
    assert code == 2 and f"port {port} on 127.0.0.1 is already in use; set cluster.port" in err
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    code, _, err = run_cli(capsys, "run", "ppo_tiny", "cluster.device=cuda", f"cluster.devices_per_node={gpus + 1}",
                           f"train.run_dir={tmp_path / 'r'}")
    assert code == 2 and f"this machine has {gpus} CUDA device(s)" in err
    assert not (tmp_path / "r").exists()  # nothing written
    code, _, err = run_cli(capsys, "run", "ppo_tiny", "cluster.nodes=2", f"train.run_dir={tmp_path / 'r'}")
    assert code == 2 and "start them with torchrun" in err
    code, _, err = run_cli(capsys, "worker", "ppo_tiny", "--plan", str(tmp_path / "p.yaml"))
    assert code == 2 and "runs under torchrun" in err


def test_debug_shows_the_traceback():
    from realloc.experiment import ConfigError

    with pytest.raises(ConfigError, match="batch_sise"):
        main(["validate", "ppo_tiny", "graph.batch_sise=3", "--debug"])


def test_validate_graph_keys_list(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "validate", "grpo_tiny")
    assert code == 0 and out.startswith("ok: grpo_tiny: 3 models, 4 calls")
    code, out, _ = run_cli(capsys, "graph", "ppo_tiny")
    assert code == 0 and "actor_gen -> reward_inf  (key seq)" in out
    code, out, _ = run_cli(capsys, "graph", "ppo_tiny", "--out", str(tmp_path / "g.dot"))
    assert code == 0 and (tmp_path / "g.dot").read_text().startswith("digraph")
    code, out, _ = run_cli(capsys, "keys", "plan")
    assert code == 0 and "plan.mode = 'search'" in out
    code, out, _ = run_cli(capsys, "list", "templates")
    from graph.catalog import known_interfaces
    from graph.templates import known_templates

    assert code == 0 and [line.split()[0] for line in out.splitlines()] == list(known_templates())
    assert {"rloo", "reinforce_pp", "gspo", "dr_grpo", "dapo"} <= set(known_templates())
    code, out, _ = run_cli(capsys, "list", "interfaces")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == list(known_interfaces())
    assert "pg_actor" in known_interfaces()


def test_plan_prints_layouts_estimates_and_baselines(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "plan", "ppo_tiny", "--dry-run", "--out", str(tmp_path / "p.yaml"),
                           "--timeline", str(tmp_path / "t.png"))
    assert code == 0
    assert "estimated iteration time" in out and "heuristic baselines" in out
    for name in ("actor_gen", "critic_train", "symmetric", "colocated-dp", "disaggregated"):
        assert name in out
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    code, out_steps, _ = run_cli(capsys, "plan", "ppo_tiny", "plan.mode=heuristic:symmetric", "--steps")
    assert code == 0 and "steps of a steady iteration" in out_steps
    assert "run actor_gen on [0, 1, 2, 3]" in out_steps and "run critic_train on [0, 1, 2, 3]" in out_steps
    # the saved plan runs unchanged: planning from the file gives the same layouts
    code, out2, _ = run_cli(capsys, "plan", "ppo_tiny", "plan.mode=file", f"plan.file={tmp_path / 'p.yaml'}")
    assert code == 0 and "(plan from file:" in " ".join(out2.split())  # rich may wrap long paths


def test_plan_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "plan", "ppo_tiny", "plan.mode=manual", "+plan.layouts.actor_gen.size=2",
                           "+plan.layouts.actor_gen.start=0")
    assert code == 2 and "no layout for call(s)" in err
    code, _, err = run_cli(capsys, "plan", "ppo_tiny", "plan.mode=file", f"plan.file={tmp_path / 'none.yaml'}")
    assert code == 2 and "none.yaml" in err


def test_help_for_every_command(capsys):
    for cmd in ("run", "plan", "validate", "graph", "keys", "list"):
        with pytest.raises(SystemExit) as info:
            main([cmd, "--help"])
        assert info.value.code == 0
        assert "usage: realloc" in capsys.readouterr().out


def test_plan_json_is_stable_and_torch_free():
    """One subprocess: the console entry point, JSON parse, and no torch import on the plan path."""
    code = (
        "import json, sys, io, contextlib\n"
        "from realloc.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    rc = main(['plan', 'ppo_tiny', '--dry-run', '--json'])\n"
        "print(json.dumps({'rc': rc, 'report': json.loads(buf.getvalue()),\n"
        "                  'heavy': sorted(m for m in ('torch', 'megatron', 'transformers') if m in sys.modules)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout)
    assert result["rc"] == 0 and result["heavy"] == []
    report = result["report"]
    assert report["schema_version"] == 1
    assert set(report) == {"schema_version", "experiment", "config", "graph", "plan"}
    assert report["plan"]["schema"] == "realloc.plan_report" and report["plan"]["feasible"]
    assert {c["name"] for c in report["plan"]["calls"]} == {c["name"] for c in report["graph"]["calls"]}
    calls = report["graph"]["calls"]
    assert [c["name"] for c in calls][0] == "actor_gen"
    assert calls[0]["args"]["max_new_tokens"] == 2
    assert {"src": "actor_gen", "dst": "reward_inf", "kind": "data", "key": "seq"} in report["graph"]["edges"]
    assert report["config"]["cluster"]["devices_per_node"] == 4


def test_a_bug_is_not_a_user_error(capsys, monkeypatch):
    """A ValueError from deep inside (here: planning) is a bug: exit 1, one line saying so,
    the traceback in a log file; only UserErrors are one-line mistakes with exit 2."""
    import realloc.planning

    def broken(*a, **k):
        raise ValueError("tensor shape mismatch inside torch")

    monkeypatch.setattr(realloc.planning, "make_plan", broken)
    code, _, err = run_cli(capsys, "plan", "ppo_tiny", "--dry-run")
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith("realloc: bug: ValueError: tensor shape mismatch inside torch -- this is a bug")
    log = line.split("the traceback is in ", 1)[1].split(";", 1)[0]
    assert "Traceback" in open(log).read() and "broken" in open(log).read()
    assert "Traceback" not in err


def test_a_full_disk_names_the_file_and_is_not_a_bug(capsys, monkeypatch):
    import errno

    import realloc.planning

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/plan.yaml")

    monkeypatch.setattr(realloc.planning, "make_plan", full)
    code, _, err = run_cli(capsys, "plan", "ppo_tiny", "--dry-run")
    assert code == 2 and err.strip() == ("realloc: error: /runs/x/plan.yaml: No space left on device (free "
                                         "space or fix the permissions, then run again)")


def test_options_and_overrides_in_any_order(capsys):
    for argv in (["validate", "ppo_tiny", "graph.batch_size=16", "--debug"],
                 ["validate", "--debug", "ppo_tiny", "graph.batch_size=16"],
                 ["graph", "ppo_tiny", "--debug", "graph.batch_size=16"]):
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0, argv
    from realloc.cli import build_parser, parse_args

    for argv in (["run", "--plan", "p.yaml", "ppo_tiny", "train.iterations=2"],
                 ["run", "ppo_tiny", "--plan", "p.yaml", "train.iterations=2"],
                 ["run", "ppo_tiny", "train.iterations=2", "--plan", "p.yaml"]):
        args = parse_args(build_parser(), argv)
        assert (args.plan, args.words) == ("p.yaml", ["ppo_tiny", "train.iterations=2"]), argv
    with pytest.raises(SystemExit):
        main(["validate", "ppo_tiny", "--no-such-option"])
