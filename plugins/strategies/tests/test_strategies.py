"""Strategy registration, options, launcher checks and the GPU-only errors (one process)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from paddlellm.plugin.config import build_run_config
from paddlellm.errors import BackendUnavailableError, ConfigError
from paddlellm.plugin.manager import PluginManager

from paddlellm_strategies import _dist
from paddlellm_strategies.launch import ENTRY, launch_command

STRATEGIES = ("single", "data_parallel", "tensor_parallel", "sharding", "pipeline_parallel")
LAUNCH_VARS = ("PADDLE_TRAINERS_NUM", "PADDLE_TRAINER_ID")


@pytest.fixture(scope="module")
def manager():
    return PluginManager()


@pytest.fixture(scope="module")
def backend(manager):
    backend = manager.select_backend(None).load()
    backend.setup()
    return backend


@pytest.fixture
def no_launcher(monkeypatch):
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)


def strategy(manager, name, options=None):
    return manager.registry.load("trainer_strategy", name)(options)


def test_every_strategy_is_registered_by_this_distribution(manager):
    assert set(STRATEGIES) <= set(manager.registry.names("trainer_strategy"))
    for name in STRATEGIES:
        assert manager.registry.get("trainer_strategy", name).distribution == "paddlellm-strategies"


def test_strategy_options_are_validated_config_keys(manager):
    config = build_run_config(None, ["--strategy", "tensor_parallel", "--tensor_parallel_degree", "2"],
                              registry=manager.registry)
    assert config.plugin_options["trainer_strategy"].tensor_parallel_degree == 2
    config = build_run_config(None, ["--strategy", "sharding", "--sharding_stage", "3"],
                              registry=manager.registry)
    assert config.plugin_options["trainer_strategy"].sharding_stage == 3
    with pytest.raises(ConfigError, match="sharding_stage"):
        build_run_config(None, ["--strategy", "sharding", "--sharding_stage", "4"],
                         registry=manager.registry)
    with pytest.raises(ConfigError, match="sharding_stage"):  # an option of another strategy
        build_run_config(None, ["--strategy", "data_parallel", "--sharding_stage", "2"],
                         registry=manager.registry)


@pytest.mark.parametrize("name", ["data_parallel", "tensor_parallel"])
def test_multi_process_strategies_without_launcher_name_the_launch_command(manager, backend,
                                                                           no_launcher, name):
    with pytest.raises(ConfigError, match=r"paddle\.distributed\.launch --nproc_per_node N") as err:
        strategy(manager, name).setup(backend)
    assert f"--strategy {name}" in str(err.value)


def test_one_launched_process_runs_like_single_with_a_warning(manager, backend, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "1")
    monkeypatch.setenv("PADDLE_TRAINER_ID", "0")
    import paddle

    for name in ("data_parallel", "tensor_parallel"):
        s = strategy(manager, name)
        with pytest.warns(UserWarning, match="runs like --strategy single"):
            s.setup(backend)
        model = paddle.nn.Linear(2, 2)
        assert s.wrap_model(model) is model
        assert (s.world_size, s.rank, s.is_main_process) == (1, 0, True)
        assert s.all_reduce_mean(1.5) == 1.5


def test_data_parallel_shards_are_strided_disjoint_and_equal_length():
    parts = [_dist.strided(list(range(11)), 3, r) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # 9, 10 dropped: equal steps per rank
    assert _dist.strided([1, 2, 3], 1, 0) == [1, 2, 3]


def test_tensor_parallel_degree_must_divide_the_processes(manager, backend, monkeypatch):
    from paddlellm_strategies.tensor_parallel import TensorParallelOptions

    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    monkeypatch.setenv("PADDLE_TRAINER_ID", "0")
    with pytest.raises(ConfigError, match=r"tensor_parallel_degree 4 must divide .* \(2\)"):
        strategy(manager, "tensor_parallel", TensorParallelOptions(tensor_parallel_degree=4)).setup(backend)


def test_tensor_parallel_plan_splits_every_projection_and_checks_divisibility():
    from paddlellm.api import AutoModelForCausalLM
    from paddlellm_strategies.tensor_parallel import parallelize_plan

    model = AutoModelForCausalLM.from_config("llama-tiny", vocab_size=64)
    plan = parallelize_plan(model, 2)
    kinds = {key: type(p).__name__ for key, p in plan.items()}
    n_layers = model.config.num_layers
    assert len(plan) == 7 * n_layers
    assert kinds[r"^model\.layers\.0\.self_attn\.q_proj$"] == "ColWiseParallel"
    assert kinds[r"^model\.layers\.0\.mlp\.down_proj$"] == "RowWiseParallel"
    assert kinds[r"^model\.layers\.1\.self_attn\.o_proj$"] == "RowWiseParallel"
    with pytest.raises(ConfigError, match="does not divide model.layers.0"):
        parallelize_plan(model, 3)


def test_sharding_on_cpu_is_a_clear_gpu_only_error(manager, backend, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")  # even when launched
    monkeypatch.setenv("PADDLE_TRAINER_ID", "0")
    with pytest.raises(BackendUnavailableError,
                       match=r"Paddle implements group-sharded \(ZeRO stage 1/2/3\) training "
                             r"for GPU/XPU only \(no reduce_scatter kernel on CPU\), and this "
                             r"run is on 'cpu'.*--strategy data_parallel"):
        strategy(manager, "sharding").setup(backend)


def test_pipeline_parallel_on_cpu_is_a_clear_gpu_only_error(manager, backend):
    with pytest.raises(BackendUnavailableError,
                       match="Paddle implements pipeline parallelism for GPU/XPU only"):
        strategy(manager, "pipeline_parallel").setup(backend)


def test_llm_run_with_sharding_on_cpu_prints_the_error(tmp_path):
    llm = Path(sys.executable).with_name("llm")
    proc = subprocess.run([str(llm), "run", "--strategy", "sharding", "--max_steps", "1",
                           "--output_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: --strategy sharding needs a GPU or XPU" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_llm_launch_builds_the_paddle_launcher_command():
    cmd = launch_command(2, ["run", "--strategy", "data_parallel"], log_dir="logs")
    assert cmd[:3] == [sys.executable, "-m", "paddle.distributed.launch"]
    assert cmd[3:] == ["--nproc_per_node", "2", "--max_restart", "0", "--log_dir", "logs",
                       str(ENTRY), "run", "--strategy", "data_parallel"]
    assert ENTRY.is_file()


def test_loading_the_strategies_and_llm_launch_does_not_import_paddle():
    code = ("import sys\n"
            "from paddlellm.cli import build_app\n"
            "from paddlellm.plugin.manager import PluginManager\n"
            "build_app()\n"
            "m = PluginManager()\n"
            f"for name in {STRATEGIES!r}:\n"
            "    m.registry.load('trainer_strategy', name)\n"
            "assert 'paddle' not in sys.modules, 'paddle imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_sharding_model_proxy_forwards_until_the_optimizer_exists(manager):
    import numpy as np
    import paddle

    from paddlellm.api import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config("llama-tiny", vocab_size=64)
    proxy = strategy(manager, "sharding").wrap_model(model)
    ids = paddle.to_tensor(np.arange(8).reshape(1, 8))
    np.testing.assert_array_equal(proxy(ids).numpy(), model(ids).numpy())
    assert proxy.save_pretrained == model.save_pretrained and proxy.config is model.config
    assert [id(p) for p in proxy.parameters()] == [id(p) for p in model.parameters()]
    assert [n for n, _ in proxy.named_parameters()] == [n for n, _ in model.named_parameters()]
