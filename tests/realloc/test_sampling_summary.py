"""The end-of-run line on dynamic sampling: measured rounds against the planner's price."""

from realloc.experiment import load_experiment
from realloc.run import sampling_rounds_line


def test_the_line_gives_the_measured_rounds_and_the_setting():
    exp = load_experiment("dapo_tiny", ["graph.train.expected_sampling_rounds=2"])
    records = [{"dynamic_sampling/rounds": 3.0, "dynamic_sampling/groups_topped_up": 0.0},
               {"dynamic_sampling/rounds": 2.0, "dynamic_sampling/groups_topped_up": 5.0}]
    line = sampling_rounds_line(exp.graph, records)
    assert line.startswith("dynamic sampling: 2.50 generation rounds per iteration (the plan priced 2;")
    assert "graph.train.expected_sampling_rounds=2.50" in line and "5 groups topped up after 4 rounds" in line
    assert sampling_rounds_line(load_experiment("grpo_tiny").graph, records) == ""


def test_the_plan_says_what_its_estimates_assume():
    from realloc.report import resampling_line

    line = resampling_line(load_experiment("dapo_tiny", ["graph.train.expected_sampling_rounds=2.5"]))
    assert line == ("dynamic sampling: actor_gen, reward_inf priced at 2.5 rounds per iteration "
                    "(graph.train.expected_sampling_rounds; at most 4)")
    assert resampling_line(load_experiment("rloo_tiny")) == ""
