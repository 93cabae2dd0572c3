"""bag_io: message registration and a write/read round trip through rosbags (MCAP)."""

import numpy as np

from persistence_ros import bag_io
from persistence_ros.detections import stamp_to_ns


def test_msg_dir_and_typestore():
    assert (bag_io.msg_dir() / 'Detection2DArray.msg').is_file()
    store = bag_io.get_typestore()
    for name in ('Detection2D', 'Detection2DArray', 'Track', 'TrackArray'):
        assert f'persistence_ros/msg/{name}' in store.types


def test_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, size=(5, 7, 3), dtype=np.uint8)
    dets = [{'id': 'L000003-00', 'box': [1.5, 2.0, 3.0, 4.0], 'score': 0.25, 'class_id': 'x'}]
    with bag_io.BagWriter(tmp_path / 'bag') as bag:
        bag.write('/img', 3_000_000_001, bag_io.image_msg(rgb, 3_000_000_001, 'cam'))
        bag.write('/det', 3_000_000_001, bag_io.detection_array_msg(dets, 3_000_000_001, 'cam'))
    assert list((tmp_path / 'bag').glob('*.mcap'))
    out = list(bag_io.read_messages(tmp_path / 'bag'))
    assert [(t, s) for t, s, _ in out] == [('/img', 3_000_000_001), ('/det', 3_000_000_001)]
    assert np.array_equal(bag_io.image_to_rgb(out[0][2]), rgb)
    det = out[1][2].detections[0]
    assert (det.id, det.center_x, det.height, det.score) == ('L000003-00', 1.5, 4.0, 0.25)
    assert stamp_to_ns(out[1][2].header.stamp) == 3_000_000_001
    assert list(bag_io.read_messages(tmp_path / 'bag', ['/nothing'])) == []


def test_image_to_rgb_decodes_what_the_node_decodes():
    import pytest

    from persistence_ros.image_codec import encode_image, ImageEncodingError
    rgb = np.random.default_rng(1).integers(0, 255, size=(4, 6, 3), dtype=np.uint8)
    image = bag_io.get_typestore().types[bag_io.IMAGE]

    def msg(array, encoding, step=0, bigendian=False):
        f = encode_image(array, encoding, step=step, is_bigendian=bigendian)
        return image(header=bag_io.header(5, 'cam'), height=f.height, width=f.width,
                     encoding=encoding, is_bigendian=int(bigendian), step=f.step,
                     data=np.frombuffer(f.data, np.uint8))

    assert np.array_equal(bag_io.image_to_rgb(msg(rgb, 'rgb8', step=6 * 3 + 5)), rgb)
    assert np.array_equal(bag_io.image_to_rgb(msg(rgb[:, :, ::-1].copy(), 'bgr8')), rgb)
    gray = rgb[:, :, 0].copy()
    assert np.array_equal(bag_io.image_to_rgb(msg(gray, 'mono8')), np.stack([gray] * 3, -1))
    deep = gray.astype(np.uint16) << 8 | 0x7F
    assert np.array_equal(bag_io.image_to_rgb(msg(deep, 'mono16', bigendian=True)),
                          np.stack([gray] * 3, -1))
    with pytest.raises(ImageEncodingError, match='cannot convert'):
        bag_io.image_to_rgb(msg(np.zeros((2, 2), np.float32), '32FC1'))
