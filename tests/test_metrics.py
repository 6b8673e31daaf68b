"""metrics.py writes TensorBoard's event files itself: the same bytes as tensorboardX's writer (a test-only
dependency here), with valid CRC-32C checks."""

import struct

import pytest

from mmjax import metrics


def test_crc32c_of_the_standard_check_string():
    assert metrics.crc32c(b"123456789") == 0xE3069283 and metrics.crc32c(b"") == 0


@pytest.mark.parametrize("step", [0, 1, 127, 128, 300, 70_000, 2**40])
def test_an_event_is_the_bytes_tensorboardx_writes(tmp_path, step):
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import scalar

    wall_time = 1796224676.123
    event = Event(wall_time=wall_time, step=step, summary=scalar("member_3/Loss/test", 2.0953))
    assert metrics.event(wall_time, step, scalars=[("member_3/Loss/test", 2.0953)]) == event.SerializeToString()
    assert metrics.event(wall_time, file_version="brain.Event:2") == Event(
        wall_time=wall_time, file_version="brain.Event:2").SerializeToString()
    writer = EventsWriter(str(tmp_path / "events"))
    writer.write_event(event)
    writer.close()
    [written] = tmp_path.glob("events*")
    record = metrics.tfrecord(event.SerializeToString())
    assert written.read_bytes().endswith(record)
    (n,) = struct.unpack("<Q", record[:8])  # TFRecord: the length and its CRC, the data and its CRC
    assert n == len(event.SerializeToString()) and len(record) == 16 + n
