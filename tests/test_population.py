"""Seed populations (``rlnorm train --seeds``): member k is the run ``--seed k``.

The central property: after several updates, every member's weights and normalization
statistics equal those of the same seed trained alone by the ordinary learner, so a
population is K runs, not an approximation of them, and nothing (BatchNorm statistics
included) crosses members.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import rlnorm
from rlnorm import agents, cli, config, envs
from rlnorm.cli_parser import parse_seeds
from rlnorm.errors import ConfigError
from rlnorm.learner import Learner
from rlnorm.minibatches import ValidSamples
from rlnorm.population import PopulationLearner

SEEDS = [0, 1, 5]
SMALL = [
    "agent.batch_size=16",
    "agent.learning_starts=24",
    "agent.diagnostics_every=0",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.eval_episodes=2",
    "train.final_eval_episodes=2",
    "train.eval_num_envs=2",
    "train.num_envs=2",
]
CASES = {
    # agent, norm, overrides: every off-policy algorithm and both batch-dependent norms
    "sac-batch": ("sac", "batch", ["agent.hidden=[16,16]"]),
    "sac-layer-separate": (
        "sac",
        "layer",
        ["agent.hidden=[16,16]", "agent.critic_streams=separate"],
    ),
    "td3-ddpg-batch": (
        "td3",
        "batch",
        ["agent.hidden=[16,16]", "agent.bn_placement=ddpg", "agent.learning_starts=24"],
    ),
    # observation and reward normalization: each member's statistics of its own data
    "sac-batch-normalized": (
        "sac",
        "batch",
        ["agent.hidden=[16,16]", "train.normalize_obs=true", "train.normalize_reward=true"],
    ),
    "crossq-batch_renorm": (
        "crossq",
        "batch_renorm",
        [
            "agent.actor_hidden=[16,16]",
            "agent.critic_hidden=[32,32]",
            "agent.renorm_warmup_steps=3",
        ],
    ),
}
#: learning_starts 24 over 2 sub-envs: 12 warm-up collections, then 7 updates (at 24..36)
STEPS = 24 + 2 * 6


def _config(agent: str, norm: str, extra: list[str], seed: int = 0) -> config.RunConfig:
    return config.resolve(
        agents.get(agent),
        "Pendulum-v1",
        norm=norm,
        seed=seed,
        overrides=[*SMALL, *extra],
        total_steps=STEPS,
    )


def _make_env(num_envs: int) -> envs.TorchVecEnv:
    return envs.make("Pendulum-v1", num_envs=num_envs)


def _population(tmp_path: Path, agent: str, norm: str, extra: list[str]) -> PopulationLearner:
    runs = [tmp_path / f"seed{s}" for s in SEEDS]
    return PopulationLearner(
        agents.get(agent),
        _config(agent, norm, extra),
        SEEDS,
        runs,
        tmp_path / "population",
        _make_env,
        quiet=True,
    )


@pytest.fixture
def float64() -> Iterator[None]:
    """Networks in float64: in float32, Adam's first steps turn the rounding noise of a
    gradient that is mathematically zero (a Linear's bias before BatchNorm) into steps of
    +-lr whose signs depend on the summation order, so two correct implementations part
    at ~1e-3 after a few updates; in float64 that noise stays far below Adam's eps."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_member_has_the_weights_of_its_single_seed_run(
    tmp_path: Path, case: str, float64: None
) -> None:
    """Seven updates after the warm-up, member k's every parameter and buffer (running
    statistics, batch counts, targets) equals the single-seed run's to 1e-6 (float64,
    CPU): its own initial weights, random stream, env, replay, optimizer and statistics."""
    agent, norm, extra = CASES[case]
    population = _population(tmp_path, agent, norm, extra)
    result = population.train()
    assert population.updates == 7
    for k, seed in enumerate(SEEDS):
        cfg = _config(agent, norm, extra, seed)
        single = Learner.create(
            agents.get(agent), _make_env(2), _make_env(2), cfg, tmp_path / f"single{seed}", True
        )
        alone = single.train()
        assert single.updates == population.updates
        member = population.agents[k]
        for name, module in single.agent.modules().items():
            expected = module.state_dict()
            got = member.modules()[name].state_dict()
            assert expected.keys() == got.keys()
            for key, value in expected.items():
                torch.testing.assert_close(
                    got[key].to(value.dtype),
                    value,
                    atol=1e-6,
                    rtol=0,
                    msg=f"{case} {seed} {name}.{key}",
                )
        normalizers = (member.obs_normalizer, single.agent.obs_normalizer)
        assert (normalizers[0] is None) == (normalizers[1] is None)
        if normalizers[1] is not None:
            for key, value in normalizers[1].state_dict().items():
                torch.testing.assert_close(
                    normalizers[0].state_dict()[key], value, rtol=1e-9, atol=1e-9
                )
        assert result.members[k].final_eval.mean == pytest.approx(alone.final_eval.mean, abs=1e-3)


@pytest.mark.filterwarnings("ignore:audit:RuntimeWarning")  # tiny runs: audit findings expected
def test_a_member_on_a_gymnasium_env_has_the_weights_of_its_single_seed_run(
    tmp_path: Path, float64: None
) -> None:
    """Envs from gymnasium's registry (MuJoCo here) are not split: each member steps its own,
    reset with its seed, so member k is still the run --seed k."""
    make_env = lambda n: envs.make("InvertedPendulum-v5", num_envs=n)  # noqa: E731

    def run_config(seed: int) -> config.RunConfig:
        overrides = [*SMALL, "agent.hidden=[16,16]"]
        return config.resolve(
            agents.get("sac"),
            "InvertedPendulum-v5",
            norm="batch",
            seed=seed,
            overrides=overrides,
            total_steps=STEPS,
        )

    runs = [tmp_path / f"seed{s}" for s in SEEDS]
    population = PopulationLearner(
        agents.get("sac"), run_config(0), SEEDS, runs, tmp_path / "pop", make_env, quiet=True
    )
    population.train()
    assert population.env.joined is None
    for k, seed in enumerate(SEEDS):
        single = Learner.create(
            agents.get("sac"), make_env(2), make_env(2), run_config(seed), tmp_path / f"{k}", True
        )
        single.train()
        _assert_same_state(population.agents[k], single.agent, f"seed {seed}")


PPO_SMALL = [
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.eval_episodes=2",
    "train.final_eval_episodes=2",
    "train.eval_num_envs=2",
    "train.num_envs=4",
    "agent.rollout_steps=16",
    "agent.epochs=2",
    "agent.minibatch_size=16",
    "agent.hidden=[16,16]",
]
PPO_CASES = {
    # env, norm, overrides: frozen statistics (the default) with BatchNorm's cumulative
    # refresh pass over each member's own valid steps; Batch Renorm on a Gaussian policy;
    # plain train mode, where every minibatch's statistics are a member's padded rows
    "ppo-cartpole-batch": ("CartPole-v1", "batch", []),
    "ppo-pendulum-batch_renorm": ("Pendulum-v1", "batch_renorm", []),
    "ppo-acrobot-batch-train-mode": (
        "Acrobot-v1",
        "batch",
        [
            "agent.norm_update=batch",
            "agent.old_log_prob=behaviour",
            "agent.normalize_advantages=true",
        ],
    ),
}
#: members whose valid steps split into 2 or 3 minibatches (round(n / 24) for n near 60)
PPO_CASES["ppo-cartpole-uneven-minibatches"] = ("CartPole-v1", "batch", ["agent.minibatch_size=24"])
#: for the resume test only
PPO_CASES_RESUMED = {"ppo-constant-lr": ("CartPole-v1", "batch", ["agent.anneal_lr=false"])}
#: 5 updates of 4 sub-envs x 16 steps
PPO_STEPS = 5 * 4 * 16


def _ppo_config(case: str, seed: int = 0, steps: int = PPO_STEPS) -> config.RunConfig:
    env, norm, extra = (PPO_CASES | PPO_CASES_RESUMED)[case]
    return config.resolve(
        agents.get("ppo"),
        env,
        norm=norm,
        seed=seed,
        overrides=[*PPO_SMALL, *extra],
        total_steps=steps,
    )


def _assert_same_state(got: rlnorm.Agent, expected: rlnorm.Agent, what: str) -> None:
    """Every parameter and buffer to 1e-6; large statistics (an inverse standard deviation
    of tens) to 1e-7 relative, float64's rounding after a few updates."""
    for name, module in expected.modules().items():
        state = got.modules()[name].state_dict()
        assert state.keys() == module.state_dict().keys()
        for key, value in module.state_dict().items():
            torch.testing.assert_close(
                state[key].to(value.dtype), value, atol=1e-6, rtol=1e-7, msg=f"{what} {name}.{key}"
            )


@pytest.mark.filterwarnings("ignore:audit:RuntimeWarning")  # tiny runs: audit findings expected
@pytest.mark.parametrize("case", sorted(PPO_CASES))
def test_each_ppo_member_has_the_weights_of_its_single_seed_run(
    tmp_path: Path, case: str, float64: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PPO members keep different numbers of valid steps (autoresets differ), so their
    samples are padded and masked: after 5 updates member k still equals the run --seed k,
    its minibatches drawn from its own generator, its BatchNorm statistics of its own
    steps only."""
    env = PPO_CASES[case][0]
    make_env = lambda n: envs.make(env, num_envs=n)  # noqa: E731
    runs = [tmp_path / f"seed{s}" for s in SEEDS]
    population = PopulationLearner(
        agents.get("ppo"), _ppo_config(case), SEEDS, runs, tmp_path / "p", make_env, quiet=True
    )
    split = ValidSamples.minibatches
    skipped = []

    def minibatches(self: ValidSamples, *args: Any, **kwargs: Any) -> list[Any]:
        batches = split(self, *args, **kwargs)
        skipped.extend(mb.active is not None for mb in batches)
        return batches

    monkeypatch.setattr(ValidSamples, "minibatches", minibatches)
    result = population.train()
    monkeypatch.undo()
    # the uneven case does make members skip steps; the others never do
    assert any(skipped) == (case == "ppo-cartpole-uneven-minibatches")
    assert population.updates == 5
    for k, seed in enumerate(SEEDS):
        single = Learner.create(
            agents.get("ppo"), make_env(4), make_env(2), _ppo_config(case, seed), tmp_path, True
        )
        alone = single.train()
        assert single.updates == population.updates
        _assert_same_state(population.agents[k], single.agent, f"{case} seed {seed}")
        # like a run's agent, a member's is left in eval mode (nothing for audit to flag)
        modules = population.agents[k].modules().values()
        assert not any(m.training for module in modules for m in module.modules())
        assert result.members[k].final_eval.mean == pytest.approx(alone.final_eval.mean, abs=1e-3)


def test_a_ppo_population_resumes_as_a_whole(tmp_path: Path, float64: None) -> None:
    """Trained to PPO_STEPS, then continued to twice that from the members' checkpoints,
    each member ends where its seed trained alone to twice the steps ends (a constant
    learning rate: an annealed one follows the budget, which the continuation changes)."""
    case = "ppo-constant-lr"
    make_env = lambda n: envs.make("CartPole-v1", num_envs=n)  # noqa: E731
    runs = [tmp_path / f"seed{s}" for s in SEEDS]
    args = (SEEDS, runs, tmp_path / "p", make_env)
    PopulationLearner(agents.get("ppo"), _ppo_config(case), *args, quiet=True).train()
    cfg = _ppo_config(case, steps=2 * PPO_STEPS)
    population = PopulationLearner(agents.get("ppo"), cfg, *args, quiet=True)
    population.restore()
    population.train()
    for seed in SEEDS:
        single = Learner.create(
            agents.get("ppo"),
            make_env(4),
            make_env(2),
            _ppo_config(case, seed, 2 * PPO_STEPS),
            tmp_path / f"alone{seed}",
            True,
        )
        single.train()
        member = rlnorm.load(tmp_path / f"seed{seed}" / "checkpoints" / "last")
        assert member.counters["env_steps"] == 2 * PPO_STEPS
        _assert_same_state(member, single.agent, f"seed {seed}")


def test_members_with_different_data_keep_their_own_statistics(tmp_path: Path) -> None:
    """Members see different states (different seeds), and each member's BatchNorm running
    mean differs from the others': no pooled statistics."""
    agent, norm, extra = CASES["sac-batch"]
    population = _population(tmp_path, agent, norm, extra)
    population.train()
    means = [
        next(
            buf
            for name, buf in member.modules()["critic"].named_buffers()
            if name.endswith("running_mean")
        )
        for member in population.agents
    ]
    assert not torch.allclose(means[0], means[1]) and not torch.allclose(means[1], means[2])


def test_member_run_directories_are_ordinary_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``rlnorm train --seeds`` writes one run directory per seed whose checkpoint
    ``rlnorm.load`` returns as an ordinary single agent and ``rlnorm eval``/``audit`` read."""
    monkeypatch.chdir(tmp_path)
    argv = [
        "train",
        "--agent",
        "sac",
        "--env",
        "Pendulum-v1",
        "--norm",
        "batch",
        "--seeds",
        "2,4",
        "--steps",
        str(STEPS),
        "--quiet",
    ]
    argv += [f"--set={item}" for item in [*SMALL, *CASES["sac-batch"][2]]]
    assert cli.main(argv) == 0
    runs = sorted((tmp_path / "runs" / "sac" / "Pendulum-v1" / "batch").glob("seed*"))
    assert [run.name.split("-")[0] for run in runs] == ["seed2", "seed4"]
    for run, seed in zip(runs, (2, 4), strict=True):
        assert f"# seed: {seed}\n" in (run / "config.yaml").read_text()
        agent = rlnorm.load(run / "checkpoints" / "last")
        assert agent.draws.members is None  # an ordinary single agent
        assert agent.act(torch.zeros(3, 3)).actions.shape == (3, 1)
        assert (run / "eval.jsonl").read_text().count("\n") == 1
        assert cli.main(["eval", str(run / "checkpoints" / "last"), "--episodes", "2"]) == 0
        assert cli.main(["audit", str(run / "checkpoints" / "last")]) in (0, 1)
    # the population's directory resumes every member together, each in its own directory
    (population,) = (tmp_path / "runs" / "sac" / "Pendulum-v1" / "batch").glob("population-*")
    resume = ["train", "--resume", str(population), "--steps", str(2 * STEPS), "--quiet"]
    assert cli.main([*resume, "--seed", "3"]) == 2  # members keep their own seeds
    assert cli.main(resume) == 0
    for run in runs:
        assert rlnorm.load(run / "checkpoints" / "last").counters["env_steps"] == 2 * STEPS
        assert (run / "eval.jsonl").read_text().count("\n") == 2
        assert (run / "command.txt").read_text().count("--resume") == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "population.json").write_text('{"seeds": [0, 1], "runs": ["a"]}')
    assert cli.main(["train", "--resume", str(broken)]) == 2
    assert "population.json: records 2 seeds for 1 run directories" in capsys.readouterr().err
    (broken / "population.json").write_text("{")
    assert cli.main(["train", "--resume", str(broken)]) == 2
    assert "population.json: not a population record" in capsys.readouterr().err


def test_seeds_parse_ranges_and_lists() -> None:
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0,3,5") == [0, 3, 5]
    assert parse_seeds("0-1,7") == [0, 1, 7]
    for bad in ("", "a", "3-1", "1,1", "-2", "0-"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_unsupported_populations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sb3:PPO runs one seed per process"):
        PopulationLearner(
            agents.get("sb3:PPO"),
            config.resolve(agents.get("sb3:PPO"), "CartPole-v1", total_steps=64),
            [0, 1],
            [tmp_path / "a", tmp_path / "b"],
            tmp_path / "p",
            lambda n: envs.make("CartPole-v1", num_envs=n),
        )
    assert cli.main(["train", "--agent", "sac", "--seeds", "0-1", "--seed", "3"]) == 2


def test_a_non_finite_member_stops_alone_and_the_others_stay_their_runs(
    tmp_path: Path, float64: None
) -> None:
    """Member 1's weights turn NaN after update 3: it stops (a warning names its seed, its
    summary says why, its weights go back to its last good state and stay there), and
    members 0 and 2 go on to end exactly where their seeds trained alone end."""
    from rlnorm.errors import NonFiniteError

    agent, norm, extra = CASES["sac-batch"]
    population = _population(tmp_path, agent, norm, extra)
    update = population.population.update

    def poisoned(*args: Any, **kwargs: Any) -> dict[str, float]:
        metrics = update(*args, **kwargs)
        if population.updates == 3:
            with torch.no_grad():
                next(population.population.modules()["actor"].parameters())[1].fill_(torch.nan)
        return metrics

    population.population.update = poisoned  # type: ignore[method-assign]
    with pytest.warns(RuntimeWarning, match=r"seed 1: non-finite weights after update 4"):
        result = population.train()
    summary = json.loads((tmp_path / "seed1" / "summary.json").read_text())
    assert summary["stopped"].startswith("non-finite weights after update 4")
    assert "stopped" not in json.loads((tmp_path / "seed0" / "summary.json").read_text())
    initial = _population(tmp_path / "fresh", agent, norm, extra).agents[1]  # seed 1 unstarted
    _assert_same_state(population.agents[1], initial, "stopped member")
    assert [m.seed for m in result.members] == SEEDS
    for k, seed in [(0, 0), (2, 5)]:
        single = Learner.create(
            agents.get(agent), _make_env(2), _make_env(2), _config(agent, norm, extra, seed),
            tmp_path / f"single{seed}", True,
        )  # fmt: skip
        single.train()
        _assert_same_state(population.agents[k], single.agent, f"seed {seed}")
    # no member left: the population stops
    population.quarantine.stopped = {0: "test", 2: "test"}
    population.agents[1].modules()["actor"].get_parameter("body.0.weight").data.fill_(torch.nan)
    with torch.no_grad():
        next(population.population.modules()["actor"].parameters())[1].fill_(torch.nan)
    with pytest.raises(NonFiniteError, match="in every member left"):
        population._check_finite()


def test_a_member_resumes_alone_as_its_own_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, float64: None
) -> None:
    """A member's ``checkpoints/last`` holds its run's training state (its generator as the
    global one, its env, episodes in flight, replay buffer and optimizer moments):
    ``rlnorm train --resume`` on the member's run directory continues it alone, and after
    as many steps again it has the weights of the seed trained alone, uninterrupted."""
    agent, norm, extra = CASES["td3-ddpg-batch"]
    population = _population(tmp_path, agent, norm, extra)
    population.train()
    member_dir = tmp_path / "seed1"
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--resume", str(member_dir), "--steps", str(2 * STEPS), "--quiet"]
    assert cli.main(argv) == 0
    resumed = rlnorm.load(member_dir / "checkpoints" / "last")

    cfg = _config(agent, norm, extra, seed=1)
    cfg.train.total_steps = 2 * STEPS
    single = Learner.create(
        agents.get(agent), _make_env(2), _make_env(2), cfg, tmp_path / "alone", True
    )
    single.train()
    assert resumed.counters["env_steps"] == 2 * STEPS
    for name, module in single.agent.modules().items():
        got = resumed.modules()[name].state_dict()
        for key, value in module.state_dict().items():
            torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0, msg=f"{name}.{key}")


def _assert_members_equal_single_runs(tmp_path: Path, agent: str, norm: str, extra: list[str]):
    """Each member's ``checkpoints/last`` has the weights of its seed trained alone to
    ``2 * STEPS`` (float64, 1e-6)."""
    for seed in SEEDS:
        cfg = _config(agent, norm, extra, seed=seed)
        cfg.train.total_steps = 2 * STEPS
        single = Learner.create(
            agents.get(agent), _make_env(2), _make_env(2), cfg, tmp_path / f"alone{seed}", True
        )
        single.train()
        member = rlnorm.load(tmp_path / f"seed{seed}" / "checkpoints" / "last")
        assert member.counters["env_steps"] == 2 * STEPS
        for name, module in single.agent.modules().items():
            got = member.modules()[name].state_dict()
            for key, value in module.state_dict().items():
                torch.testing.assert_close(
                    got[key], value, atol=1e-6, rtol=0, msg=f"seed {seed}: {name}.{key}"
                )


@pytest.mark.parametrize("case", ["sac-batch-normalized", "crossq-batch_renorm"])
def test_the_population_resumes_as_a_whole(tmp_path: Path, case: str, float64: None) -> None:
    """After a stop, the population continues from its members' last checkpoints (weights,
    Adam moments, generators, envs, episodes in flight, replay buffers) together, and ends
    where each seed trained alone and uninterrupted ends."""
    agent, norm, extra = CASES[case]
    _population(tmp_path, agent, norm, extra).train()
    cfg = _config(agent, norm, extra)
    cfg.train.total_steps = 2 * STEPS
    runs = [tmp_path / f"seed{s}" for s in SEEDS]
    population = PopulationLearner(
        agents.get(agent), cfg, SEEDS, runs, tmp_path / "population", _make_env, quiet=True
    )
    population.restore()
    assert (population.env_steps, population.restored) == (STEPS, True)
    population.train()
    _assert_members_equal_single_runs(tmp_path, agent, norm, extra)


def test_members_stopped_at_different_steps_resume_one_by_one(
    tmp_path: Path, float64: None
) -> None:
    agent, norm, extra = CASES["sac-batch"]
    _population(tmp_path, agent, norm, extra).train()
    cfg = _config(agent, norm, extra, seed=1)
    cfg.train.total_steps = STEPS + 4
    single = Learner(
        rlnorm.load(tmp_path / "seed1" / "checkpoints" / "last"),
        _make_env(2), _make_env(2), cfg, tmp_path / "seed1", True,
    )  # fmt: skip
    single.restore(tmp_path / "seed1" / "checkpoints" / "last")
    single.train()  # seed 1 alone is now further on than the others
    runs = [tmp_path / f"seed{s}" for s in SEEDS]
    population = PopulationLearner(
        agents.get(agent), cfg, SEEDS, runs, tmp_path / "population", _make_env, quiet=True
    )
    with pytest.raises(ConfigError, match="resume each member alone"):
        population.restore()


def test_ppo_members_split_their_own_valid_steps() -> None:
    """Each member's samples are its own valid steps in its run's order, padded and
    masked; members whose counts would split into different numbers of minibatches are
    refused with the numbers (not silently given a different update)."""
    from rlnorm.draws import MemberDraws

    valid = torch.ones(8, 4, dtype=torch.bool)  # T=8 steps, K=2 members x N=2 sub-envs
    valid[[1, 4, 6], 3] = False  # member 1 lost 3 steps to autoresets
    values = torch.arange(32.0).reshape(8, 4)
    steps = ValidSamples(valid, members=2)
    taken = steps.take(values)
    assert steps.counts == [16, 13] and taken.shape == (2, 16)
    for k in range(2):
        alone = ValidSamples(valid[:, 2 * k : 2 * k + 2], members=None)
        assert torch.equal(taken[k, : steps.counts[k]], alone.take(values[:, 2 * k : 2 * k + 2]))
    draws = MemberDraws([torch.Generator().manual_seed(s) for s in (0, 1)])
    batches = steps.minibatches(8, draws, batch_dependent=True)
    assert [mb.mask.sum(1).tolist() for mb in batches if mb.mask is not None] == [[8, 7], [8, 6]]
    # 16 and 13 steps in minibatches of about 5: 3 and 3; of about 4: 4 and 3
    batches = steps.minibatches(4, draws, batch_dependent=True)
    assert [None if mb.active is None else mb.active.tolist() for mb in batches] == [
        None,
        None,
        None,
        [True, False],
    ]
    assert batches[-1].mask is not None and batches[-1].mask.sum(1).tolist() == [4, 0]
    with pytest.raises(ConfigError, match=r"different numbers of minibatches \[3, 4\]"):
        steps.minibatches(4, draws, batch_dependent=True, may_skip=False)


def test_blocks_of_an_eval_env_are_each_evaluated_as_alone() -> None:
    """``evaluate(..., blocks=K)`` over the members' eval envs gives block k the episodes
    its env alone gives (same quotas, same seed), in block order."""
    from rlnorm.rollout import evaluate
    from rlnorm.stacking import MemberEnvs

    agent = agents.get("ppo")(*_spaces("CartPole-v1"), agents.get("ppo").Config(), "batch")
    seeds = [3, 8]
    together = evaluate(
        agent, MemberEnvs(lambda n: envs.make("CartPole-v1", num_envs=n), 3, seeds), 7,
        blocks=2,
    )  # fmt: skip
    for k, seed in enumerate(seeds):
        alone = evaluate(agent, envs.make("CartPole-v1", num_envs=3), 7, seed=seed)
        assert together.returns[7 * k : 7 * (k + 1)].tolist() == alone.returns.tolist()
        assert together.lengths[7 * k : 7 * (k + 1)].tolist() == alone.lengths.tolist()


def _spaces(env_id: str) -> tuple:
    env = envs.make(env_id, num_envs=1)
    return env.single_observation_space, env.single_action_space
