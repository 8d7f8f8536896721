"""Several trials' seed groups trained together (models.lockstep): a group that its hook stops, or whose
training crashes, leaves at once, and a group beside it trains exactly as it would alone."""
import pytest

from models.lockstep import Lockstep, PackFailed, advance_together
from models.records import Callback
from models.trainer import Trainer


def train_alone(config, data, folder):
    trainer = Trainer(config, data, folder)
    group = Lockstep([trainer])
    while group.running:
        advance_together([group])
    return group.finish()[0]


class CrashAtEpochEnd(Callback):
    def on_epoch_end(self, record):
        raise OSError("disk full")


def test_a_stopped_group_leaves_and_the_other_trains_as_alone(tiny_data, tiny_config, tmp_path):
    config = tiny_config.replace(epochs=2, partial=0.5, baselines=False)
    alone = train_alone(config, tiny_data, tmp_path / "alone")
    for pack in (1, 2):      # the two groups advanced one after the other, and packed together
        seen = []

        def prune_at_first_epoch(epoch, records):
            seen.append(epoch)
            return "pruned"

        stopped = Lockstep([Trainer(config.replace(seed=5), tiny_data, tmp_path / f"stopped-{pack}")],
                           prune_at_first_epoch)
        kept = Lockstep([Trainer(config, tiny_data, tmp_path / f"kept-{pack}")])
        rounds = 0
        while stopped.running or kept.running:
            advance_together([stopped, kept], pack)
            rounds += 1
        assert rounds == 2 and seen == [0]
        (pruned,), (finished,) = stopped.finish(), kept.finish()
        assert pruned.status == "stopped" and stopped.trainers[0].epoch == 1
        assert finished.status == "completed"
        assert finished.final_val_psnr == pytest.approx(alone.final_val_psnr, abs=0.05)


def test_a_crash_fails_only_the_groups_of_its_pack(tiny_data, tiny_config, tmp_path):
    config = tiny_config.replace(epochs=2, partial=0.5, baselines=False)
    crashing = Lockstep([Trainer(config, tiny_data, tmp_path / "crash", callbacks=[CrashAtEpochEnd()])])
    other = Lockstep([Trainer(config.replace(batch_size=2), tiny_data, tmp_path / "other")])   # another pack
    with pytest.raises(PackFailed) as failed:
        advance_together([crashing, other], pack=2)
    assert [(group, repr(error)) for group, error in failed.value.failures] == [(crashing, "OSError('disk full')")]
    assert other.judged == 1 and other.running       # its epoch went on and was judged
