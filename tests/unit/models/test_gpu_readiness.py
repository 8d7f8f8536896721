"""What a GPU needs of the trainer, checked on the CPU (issue 32): precision and determinism as recorded
settings held only while a run computes; runs that move between devices; no host synchronisation inside
a training step; data on the device where it fits; a member's memory known before it starts, and packs
capped by it."""
import dataclasses
import logging
import os
import zipfile

import pytest
import torch

from harness.worker import pack_fit
from models import placement
from models.backends import CUBLAS_WORKSPACE_CONFIG, backend_flags, prepare_process
from models.config import TrainConfig
from models.cvae import VideoCVAE
from models.errors import ConfigError, DeviceError
from models.execution import resolve_device
from models.host_syncs import HostSyncs
from models.memory import TRANSIENT, PeakTensorBytes, RunMemory, run_memory, saved_activation_bytes
from models.packed_trainer import PackedTrainer
from models.records import LAST_CHECKPOINT, Callback
from models import trainer as trainer_module
from models.trainer import Trainer

CUDA = torch.device("cuda")    # a device object needs no GPU: flags are set for it, nothing runs there
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU says")


# -- settings -----------------------------------------------------------------------------------------
def test_precision_determinism_and_compilation_are_recorded_settings(tiny_config):
    values = tiny_config.to_dict()
    assert (values["precision"], values["deterministic"], values["compile"]) == ("fp32", False, "off")
    assert TrainConfig.from_dict(values | {"precision": "bf16"}).precision == "bf16"
    with pytest.raises(ConfigError, match="^precision must be one of fp32, tf32, bf16, got 'fp16'$"):
        tiny_config.replace(precision="fp16")


def flags() -> tuple:
    return (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled())


def test_backend_flags_hold_inside_the_block_and_the_process_keeps_its_own_after():
    before = flags()
    with backend_flags(CUDA, tf32=False, deterministic=True):
        assert flags() == ("ieee", "ieee", False, True, True)      # fp32 is IEEE fp32: TF32 off for both
    assert flags() == before
    with backend_flags(CUDA, tf32=True, deterministic=False):
        assert flags() == ("tf32", "tf32", True, False, False)     # cuDNN benchmark mode when not deterministic
    with backend_flags(torch.device("cpu"), tf32=False, deterministic=False):
        assert flags()[2] is False                                  # no benchmark mode off CUDA
    assert flags() == before


def test_a_deterministic_run_trains_under_its_settings_and_leaves_the_process_as_it_was(tiny_data, tiny_config):
    seen = []

    class Look(Callback):
        def on_step_end(self, step):
            seen.append(flags()[3:])

    before = flags()
    result = Trainer(tiny_config.replace(epochs=1, partial=0.25, deterministic=True, baselines=False), tiny_data,
                     callbacks=[Look()]).fit()
    assert result.status == "completed"
    assert set(seen) == {(True, True)}
    assert flags() == before


def test_deterministic_cuda_needs_a_fixed_cublas_workspace(monkeypatch):
    monkeypatch.delenv(CUBLAS_WORKSPACE_CONFIG, raising=False)
    prepare_process(CUDA, deterministic=True)
    assert os.environ[CUBLAS_WORKSPACE_CONFIG] == ":4096:8"
    monkeypatch.setenv(CUBLAS_WORKSPACE_CONFIG, ":0:0")
    prepare_process(CUDA, deterministic=False)      # not asked for: left alone
    with pytest.raises(ConfigError, match=f"^deterministic: true needs {CUBLAS_WORKSPACE_CONFIG} unset or one of"):
        prepare_process(CUDA, deterministic=True)


# -- devices ------------------------------------------------------------------------------------------
@NO_GPU
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_missing_gpu_is_a_one_line_error(name):
    with pytest.raises(DeviceError, match=f"^device '{name}': no CUDA GPU on this machine .*use --device cpu or auto"):
        resolve_device(name)


def test_an_unknown_device_is_a_one_line_error():
    with pytest.raises(DeviceError, match="^device 'gpu' is not a torch device"):
        resolve_device("gpu")


def as_written_on_a_gpu_by_older_code(path) -> None:
    """Rewrite a checkpoint as a CUDA run of the trainer before fused Adam wrote it: every storage tagged
    cuda:0 (what torch.save records for GPU tensors), Adam's groups not fused, and random states saved,
    the noise stream's a CUDA generator's (16 bytes, where the CPU's has 5056)."""
    state = torch.load(path, weights_only=True)
    for group in state["optimizer"]["param_groups"]:
        group.update(fused=None, foreach=None)
    state["rng"] = {"sampler": torch.get_rng_state(), "noise": torch.zeros(16, dtype=torch.uint8),
                    "torch": torch.get_rng_state()}
    torch.save(state, path)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    # torch.save pickles with protocol 2: a storage's location is a BINUNICODE string.
    pickle = next(name for name in entries if name.endswith("data.pkl"))
    assert b"X\x03\x00\x00\x00cpu" in entries[pickle]
    entries[pickle] = entries[pickle].replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


class StopAfterFirstEpoch(Callback):
    trainer: Trainer

    def on_epoch_end(self, record):
        self.trainer.request_stop("moved to another machine")


def test_a_run_from_a_gpu_resumes_on_the_cpu_as_if_never_interrupted(tiny_data, tiny_config, tmp_path):
    config = tiny_config.replace(epochs=2, partial=0.5, ema=0.9, tfr=0.5, tfr_sde=0, baselines=False)
    straight = Trainer(config, tiny_data)
    straight.fit()

    stop = StopAfterFirstEpoch()
    first = Trainer(config, tiny_data, tmp_path, [stop])
    stop.trainer = first
    assert first.fit().status == "stopped"
    checkpoint = tmp_path / "checkpoints" / LAST_CHECKPOINT
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["device"] = "cuda"             # the config of a run started on a GPU
    torch.save(state, checkpoint)
    as_written_on_a_gpu_by_older_code(checkpoint)

    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="^device 'cuda': no CUDA GPU"):
            Trainer.resume(checkpoint, tiny_data, tmp_path)
    resumed = Trainer.resume(checkpoint, tiny_data, tmp_path, device="cpu")
    assert resumed.config.device == "cpu" and resumed.epoch == 1
    assert resumed.fit().status == "completed"
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0, msg=name)
    for name, value in straight.averaged.state_dict().items():
        torch.testing.assert_close(resumed.averaged.state_dict()[name], value, rtol=0, atol=0, msg=name)


# -- no host synchronisation in a step ------------------------------------------------------------------
def test_the_counter_finds_each_kind_of_synchronisation():
    weights = torch.randn(4)
    host = torch.arange(3)
    with HostSyncs("cpu", roots=[weights]) as counted:
        float(weights.sum())                        # a scalar read
        weights.tolist()                            # a copy to the host
        bool((weights * 2).max() > 0)               # computed from a device tensor: still on the device
        torch.nonzero(weights > 0)                  # a size known only on the device
        host.to("cpu")                              # a blocking copy to the device
        host.to("cpu", non_blocking=True)           # ... that does not wait
        host.sum().item()                           # host tensors: no synchronisation
    kinds = sorted(kind for kind, _ in counted.events.elements())
    assert kinds == ["blocking copy to device", "data-dependent size", "scalar read", "scalar read", "tolist"]


class StepSyncs(Callback):
    """At each step's end, the synchronisations its `counter` counted since the previous step's end."""
    counter: HostSyncs

    def __init__(self):
        self.counts: list[int] = []

    def on_step_end(self, step):
        self.counts.append(self.counter.count)
        self.counter.events.clear()


def step_syncs(configs: list[TrainConfig], data) -> tuple[list[int], float]:
    """Host synchronisations in each training step of one epoch of trainers of `configs` (packed when
    several): from the end of the previous step (the epoch's start for the first) to the end of the
    step's update. The epoch's end (validation, checkpoint) reads its results to the host once: not counted.
    Also the share of the first trainer's steps that were teacher forced."""
    steps = StepSyncs()
    trainers = [Trainer(config, data, callbacks=[steps] if k == 0 else []) for k, config in enumerate(configs)]
    steps.counter = HostSyncs("cpu", [t for trainer in trainers for t in [*trainer.state_tensors(), trainer.train_img,
                                                                         trainer.train_label]],
                              [trainer.noise for trainer in trainers])
    for trainer in trainers:
        trainer.start()
    with steps.counter:
        PackedTrainer(trainers).advance() if len(trainers) > 1 else trainers[0].advance()
    return steps.counts, trainers[0].records[0].teacher_forced


# Every option that draws on the device or changes the step: noise, colour augmentation, the average,
# both ways of decoding (4 steps at tfr 0.5: seed 0 draws both), the attention's upsampling, the plate.
BUSY = {"partial": 0.25, "batch_size": 2, "ema": 0.9, "tfr": 0.5, "tfr_sde": 0, "input_noise": 0.1,
        "colour_augment": True, "colour_augment_share": 0.5,
        "output": "residual", "first_frame": True, "appearance_attention": True, "background_plate": True,
        "lr_schedule": "cosine", "baselines": False}


def test_a_training_step_never_waits_for_the_device(tiny_data, tiny_config):
    counts, forced = step_syncs([tiny_config.replace(**BUSY)], tiny_data)
    assert counts == [0, 0, 0, 0] and 0 < forced < 1


def test_a_packed_training_step_never_waits_for_the_device(tiny_data, tiny_config):
    counts, forced = step_syncs([tiny_config.replace(**BUSY, seed=seed) for seed in (0, 1)], tiny_data)
    assert counts == [0, 0, 0, 0] and 0 < forced < 1


def test_the_weight_average_is_the_lerp_it_replaces(tiny_data, tiny_config):
    trainer = Trainer(tiny_config.replace(ema=0.5), tiny_data)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in trainer.averaged.parameters()]
    trainer.update_average(torch.tensor(True))
    weight = 1 - min(0.5, 2 / 11)               # decay (1 + n) / (10 + n) at n = 1, capped at ema
    for average, start, p in zip(trainer.averaged.parameters(), before, trainer.model.parameters()):
        torch.testing.assert_close(average, start.lerp(p, weight), rtol=1e-6, atol=1e-7)
    trainer.update_average(torch.tensor(False))  # a skipped step leaves the average as it was
    for average, start, p in zip(trainer.averaged.parameters(), before, trainer.model.parameters()):
        torch.testing.assert_close(average, start.lerp(p, weight), rtol=1e-6, atol=1e-7)


# -- data on the device ---------------------------------------------------------------------------------
def test_data_that_fits_lives_on_the_device_once_for_all_trainers(tiny_data, tiny_config):
    first, second = Trainer(tiny_config, tiny_data), Trainer(tiny_config.replace(seed=1), tiny_data)
    assert first.data_on_device and second.data_on_device
    assert first.train_img.data_ptr() == second.train_img.data_ptr()
    assert first.validation.images.data_ptr() == second.validation.images.data_ptr()


def test_data_that_would_not_fit_stays_on_the_host_said_in_one_line(monkeypatch, caplog):
    runs = [torch.zeros(10, 100, dtype=torch.uint8)]
    meta = torch.device("meta")         # a device other than the host's, of which nothing is asked
    monkeypatch.setattr(placement, "free_bytes", lambda device: 3999)
    with caplog.at_level(logging.WARNING, logger="models.placement"):
        kept, on_device = placement.place(runs, meta, "training data")
    assert kept[0] is runs[0] and not on_device
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == ("training data: 0 MiB would take more than 25% of meta's 0 MiB free; kept on the host, "
                       "each batch copied to the device")
    monkeypatch.setattr(placement, "free_bytes", lambda device: 4 * 1000)
    assert placement.place(runs, meta, "training data")[1]          # 1000 bytes: a quarter of 4000


def test_a_run_whose_data_stays_on_the_host_trains_as_one_whose_data_is_on_the_device(tiny_data, tiny_config,
                                                                                     monkeypatch):
    config = tiny_config.replace(epochs=1, partial=0.25, batch_size=2, baselines=False)
    on_device = Trainer(config, tiny_data)
    monkeypatch.setattr(trainer_module, "place", lambda tensors, device, what: (list(tensors), False))
    on_host = Trainer(config, tiny_data)
    assert on_device.data_on_device and not on_host.data_on_device
    assert [r.loss for r in on_host.fit().records] == [r.loss for r in on_device.fit().records]


# -- memory ---------------------------------------------------------------------------------------------
def test_saved_activations_measured_on_the_meta_device_are_a_real_passes(tiny_config):
    config = tiny_config.replace(**{k: v for k, v in BUSY.items() if k in ("output", "first_frame",
                                                                              "appearance_attention")})
    with torch.device("meta"):
        meta = VideoCVAE.from_config(config)
    real = VideoCVAE.from_config(config)
    for forced in (True, False):
        assert saved_activation_bytes(meta, config, forced) == saved_activation_bytes(real, config, forced)


def test_a_steps_peak_lies_within_the_estimates_margin(tiny_config):
    config = tiny_config.replace(train_vi_len=4)
    model = VideoCVAE.from_config(config)
    shape = (config.batch_size, config.train_vi_len, 3, config.height, config.width)
    frames, poses = torch.rand(shape), torch.rand(shape)
    for forced in (True, False):
        saved = saved_activation_bytes(model, config, forced)
        with PeakTensorBytes() as measured:
            pred, kl = model.reconstruct(frames, poses, forced, eps=model.latent_noise(frames, None),
                                         reference=frames[:, 0])
            (pred.pow(2).mean() + kl.sum()).backward()
        model.zero_grad(set_to_none=True)
        assert saved <= measured.peak <= saved * (1 + TRANSIENT)


def test_a_runs_state_is_what_the_trainer_holds(tiny_data, tiny_config):
    config = tiny_config.replace(ema=0.9)
    trainer = Trainer(config, tiny_data)
    held = sum(t.numel() * t.element_size() for t in trainer.state_tensors() if t is not trainer.averaged_steps)
    gradients = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
    memory = run_memory(config, tiny_data)
    assert memory.state == 2 * held + gradients       # the state, the epoch's start copy, the gradients
    assert memory.data == sum(t.numel() for t in (trainer.train_img, trainer.train_label,
                                                  trainer.validation.images, trainer.validation.poses,
                                                  trainer.validation.masks))


def test_a_pack_is_as_large_as_fits():
    memory = RunMemory(state=100, activations=800, weights=10, data=50)
    assert memory.step_peak == 100 + 1000
    assert [memory.pack_peak(m) for m in (1, 2, 3)] == [1150, 2 * 1110 + 50, 3 * 1110 + 50]
    assert [pack_fit.largest_pack(memory, budget) for budget in (1000, 1150, 2269, 2270, 10_000)] == [0, 1, 1, 2, 8]


def test_a_worker_packs_fewer_members_where_the_pack_would_not_fit(tiny_data, tmp_path, monkeypatch):
    from harness.spec import load_study_spec
    from harness.worker.training import WorkerContext

    said = []
    ctx = WorkerContext(spec=dataclasses.replace(load_study_spec("smoke"), pack=8), parts=None, data=tiny_data,
                        data_root=tmp_path, device="cpu", seed=0, echo=said.append)
    config = pack_fit.largest_config(ctx.spec).replace(data=str(tmp_path))
    member = run_memory(config, tiny_data)
    monkeypatch.setattr(pack_fit, "available_bytes", lambda device: member.pack_peak(3) / pack_fit.HEADROOM)
    assert pack_fit.fitting_pack(ctx.spec, ctx) == 3
    (line,) = said
    assert line.startswith("pack 8 would need ") and "packing 3 member(s) per pass" in line
    monkeypatch.setattr(pack_fit, "available_bytes", lambda device: 10 * member.pack_peak(8))
    assert pack_fit.fitting_pack(ctx.spec, ctx) == 8 and len(said) == 1
