"""The compiled decode path (TrainConfig `compile`, models/compiled.py) computes what eager does, traced
by torch.compile on the CPU through its aot_eager backend: the graphs of the training pass (forward and
backward) and of a rollout frame, without inductor's kernels, whose C++ compiling takes many minutes on a
CPU (bench/compile_speed.py measures inductor against eager, frames/s and agreement)."""
import pytest
import torch
from torch._dynamo.utils import counters

from models import compiled
from models.cvae import VideoCVAE
from models.trainer import Trainer

pytestmark = pytest.mark.slow     # tracing still takes tens of seconds


@pytest.fixture(autouse=True)
def traced_only(monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    torch._dynamo.reset()


def test_a_trainer_compiled_at_step_trains_and_validates_as_an_eager_one(tiny_data, tiny_config):
    # Both ways of decoding in the epoch (seed 0 draws both at tfr 0.5), options that add to the graph.
    config = tiny_config.replace(epochs=1, partial=0.25, batch_size=2, tfr=0.5, tfr_sde=0, baselines=False,
                                 output="residual", first_frame=True, appearance_attention=True, val_vi_len=16, train_vi_len=4)
    eager = Trainer(config, tiny_data).fit()
    built = Trainer(config.replace(compile="step"), tiny_data).fit()
    assert 0 < eager.records[0].teacher_forced < 1
    # Compiled kernels sum in another order: equal up to float32 rounding, which Adam carries over 4 steps.
    assert built.records[0].loss == pytest.approx(eager.records[0].loss, rel=1e-4)
    assert built.curves.whole == pytest.approx(eager.curves.whole, abs=0.01)


def test_compiled_rollout_frames_are_eager_ones_and_shared_by_models_of_one_config():
    rollouts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = VideoCVAE(f_dim=16, l_dim=8, n_dim=4, d_out_dim=16, output="residual", first_frame=True).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        first, poses = torch.rand(2, 3, 16, 32), torch.rand(2, 6, 3, 16, 32)
        eager = model.rollout(first, poses, 2, torch.Generator().manual_seed(2))
        graphs = counters["stats"]["unique_graphs"]
        built = model.rollout(first, poses, 2, torch.Generator().manual_seed(2),
                              frame_step=compiled.rollout_frame(model, "rollout", torch.device("cpu")))
        rollouts.append((eager, built, counters["stats"]["unique_graphs"] - graphs))
    for eager, built, _ in rollouts:
        assert (built - eager).abs().max() < 1e-5
    # The second model of the same config reuses the first's compiled frame (a sweep's trials do).
    assert rollouts[1][2] == 0
