"""The trainer on a CUDA GPU (issue 32): training, resume, packing, validation and generate, the host
synchronisations of a step, the memory estimate and the precision settings. Skipped without a GPU;
`pytest -m cuda` (and bench/gpu_check.py) runs them where there is one."""
import pytest
import torch

from models.checkpoint import load_model
from models.data import load_test_sequences
from models.generate import rollouts_with_baselines
from models.host_syncs import HostSyncs
from models.memory import run_memory
from models.packed_trainer import PackedTrainer
from models.records import LAST_CHECKPOINT, MODEL, Callback
from models.trainer import Trainer

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
OPTIONS = {"ema": 0.9, "tfr": 0.5, "tfr_sde": 0, "input_noise": 0.1, "colour_augment": True, "output": "residual",
           "first_frame": True, "appearance_attention": True, "background_plate": True}


@pytest.fixture
def cuda_config(tiny_config):
    return tiny_config.replace(device="cuda", deterministic=True, **OPTIONS)


class StopAfter(Callback):
    def __init__(self, epochs: int):
        self.epochs, self.trainer = epochs, None

    def on_epoch_end(self, record):
        if record.epoch + 1 >= self.epochs:
            self.trainer.request_stop("test asked to stop")


def test_a_run_trains_on_the_gpu_with_its_data_there(tiny_data, cuda_config):
    trainer = Trainer(cuda_config, tiny_data)
    result = trainer.fit()
    assert result.status == "completed" and trainer.data_on_device and trainer.train_img.is_cuda
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert torch.isfinite(torch.tensor(result.final_val_psnr))


def test_a_deterministic_resume_ends_bit_equal(tiny_data, cuda_config, tmp_path):
    config = cuda_config.replace(epochs=3, lr_schedule="cosine")
    straight = Trainer(config, tiny_data)
    straight.fit()
    stop = StopAfter(1)
    first = Trainer(config, tiny_data, tmp_path, [stop])
    stop.trainer = first
    first.fit()
    resumed = Trainer.resume(tmp_path / "checkpoints" / LAST_CHECKPOINT, tiny_data, tmp_path)
    assert resumed.fit().status == "completed"
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0, msg=name)
    assert resumed.curves == straight.curves


@pytest.mark.parametrize("second", ["cpu", "cuda"])
def test_a_run_moves_between_the_gpu_and_the_cpu(tiny_data, cuda_config, tmp_path, second):
    first_device = "cpu" if second == "cuda" else "cuda"
    stop = StopAfter(1)
    first = Trainer(cuda_config.replace(device=first_device), tiny_data, tmp_path, [stop])
    stop.trainer = first
    first.fit()
    resumed = Trainer.resume(tmp_path / "checkpoints" / LAST_CHECKPOINT, tiny_data, tmp_path, device=second)
    assert resumed.device.type == second and resumed.epoch == 1
    assert resumed.fit().status == "completed"


def test_packed_members_equal_their_separate_runs(tiny_data, cuda_config):
    configs = [cuda_config.replace(seed=0, epochs=1), cuda_config.replace(seed=1, lr=2e-3, epochs=1)]
    separate = [Trainer(config, tiny_data) for config in configs]
    for trainer in separate:
        trainer.fit()
    packed = [Trainer(config, tiny_data) for config in configs]
    for trainer in packed:
        trainer.start()
    PackedTrainer(packed).advance()
    for alone, member in zip(separate, packed):
        # The same tolerances as on the CPU (tests/unit/models/test_packed_trainer.py).
        assert member.records[0].loss == pytest.approx(alone.records[0].loss, rel=1e-3)
        assert member.curves.whole == pytest.approx(alone.curves.whole, abs=0.05)


def test_a_training_step_never_waits_for_the_gpu(tiny_data, cuda_config):
    counts = []

    class Count(Callback):
        def on_step_end(self, step):
            counts.append(counter.count)
            counter.events.clear()

    trainer = Trainer(cuda_config.replace(epochs=1), tiny_data, callbacks=[Count()])
    trainer.start()
    counter = HostSyncs("cuda")
    with counter:
        trainer.advance()
    assert counts[1:] == [0] * (len(counts) - 1)     # the first step includes the epoch's start


def test_a_steps_peak_is_within_the_estimate(tiny_data, cuda_config):
    config = cuda_config.replace(f_dim=64, d_out_dim=64, epochs=1, ema=0.0)
    trainer = Trainer(config, tiny_data)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    trainer.advance()
    peak = torch.cuda.max_memory_allocated() - base
    estimate = run_memory(config, tiny_data)
    # The estimate bounds the step (state and data already allocated are in `base`).
    assert peak <= estimate.step_peak
    assert peak >= 0.5 * estimate.activations


def test_validation_and_generate_on_the_gpu_compute_what_the_cpu_does(tiny_data, tiny_data_root, cuda_config, tmp_path):
    config = cuda_config.replace(epochs=1, deterministic=False)
    trainer = Trainer(config, tiny_data, tmp_path)
    trainer.fit()
    checkpoint = tmp_path / "checkpoints" / LAST_CHECKPOINT
    sequences = load_test_sequences(tiny_data_root)
    frames = {}
    for device in ("cpu", "cuda"):
        model, loaded = load_model(checkpoint, device)
        runs = rollouts_with_baselines(model, loaded, sequences, samples=1, seed=0, length=16,
                                       device=torch.device(device), progress=lambda line: None)
        frames[device] = torch.from_numpy(runs[MODEL][0].frames).int()
    # fp32 with TF32 off: 8-bit frames within one grey level after 16 fed-back frames
    assert (frames["cpu"] - frames["cuda"]).abs().max() <= 1


def test_fp32_turns_tf32_off_and_tf32_turns_it_on(tiny_data, cuda_config):
    a, b = torch.randn(1024, 1024, device="cuda"), torch.randn(1024, 1024, device="cuda")
    exact = (a.double() @ b.double())
    errors = {}
    for precision in ("fp32", "tf32"):
        trainer = Trainer(cuda_config.replace(precision=precision), tiny_data)
        with trainer.settings():
            errors[precision] = ((a @ b).double() - exact).abs().max().item() / exact.abs().max().item()
    assert errors["fp32"] < 1e-5
    if torch.cuda.get_device_capability()[0] >= 8:      # TF32 units: Ampere and later
        assert errors["tf32"] > 1e-4


def test_a_compiled_rollout_is_the_eager_one(tiny_data, cuda_config):
    eager = Trainer(cuda_config.replace(baselines=False), tiny_data)
    graphed = Trainer(cuda_config.replace(baselines=False, compile="rollout"), tiny_data)
    assert (graphed.validation.score(graphed.model).first_rollout.int()
            - eager.validation.score(eager.model).first_rollout.int()).abs().max() <= 1
