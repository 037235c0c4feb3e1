from torch.utils.tensorboard import SummaryWriter

from ray_workflow.sweeps.tensorboard_metrics import ScalarReader


def write(log_dir, steps, tags=("loss", "reward")):
    writer = SummaryWriter(log_dir=str(log_dir))
    for step in steps:
        for tag in tags:
            writer.add_scalar(tag, float(step), step)
    writer.close()


def test_each_poll_returns_only_what_was_written_since_the_last(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path))
    reader = ScalarReader(tmp_path)
    assert reader.poll("reward") == []
    for step in range(3):
        writer.add_scalar("reward", step * 10.0, step)
    writer.flush()
    assert [(row.step, row.values["reward"]) for row in reader.poll("reward")] == [(0, 0.0), (1, 10.0), (2, 20.0)]
    assert reader.poll("reward") == []
    writer.add_scalar("reward", 30.0, 3)
    writer.flush()
    assert [row.step for row in reader.poll("reward")] == [3]
    writer.close()


def test_an_iteration_without_the_required_tag_waits_for_a_later_step_or_the_end(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path))
    reader = ScalarReader(tmp_path)
    writer.add_scalar("loss", 1.0, 0)
    writer.flush()
    assert reader.poll("reward") == []
    writer.add_scalar("reward", 5.0, 0)
    writer.flush()
    (row,) = reader.poll("reward")
    assert row.values == {"loss": 1.0, "reward": 5.0}
    writer.add_scalar("loss", 2.0, 1)
    writer.flush()
    assert reader.poll("reward") == []
    assert [row.step for row in reader.poll("reward", final=True)] == [1]
    writer.close()


def test_event_files_in_subdirectories_are_followed(tmp_path):
    write(tmp_path / "run" / "summaries", range(2))
    assert [row.step for row in ScalarReader(tmp_path).poll(final=True)] == [0, 1]


def test_a_missing_log_dir_is_not_an_error_until_it_appears(tmp_path):
    reader = ScalarReader(tmp_path / "not_yet")
    assert reader.poll() == []
    write(tmp_path / "not_yet", [0])
    assert [row.step for row in reader.poll(final=True)] == [0]
