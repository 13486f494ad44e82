"""VIDSCAN_FRAME_POLICY end to end: the server's setting reaches the media worker,
and the result says which frames were analysed (the times of the frames decoded)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from conftest import StartServer
from support.triton import TritonServer
from test_frame_sampling import encode
from vidscan.v1 import upload_pb2


@pytest.fixture(scope="module")
def long_gops(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """20 s at 10 fps with a keyframe every 8 s: 3 keyframes for 32 frames."""
    path = tmp_path_factory.mktemp("clips") / "long-gops.mp4"
    return encode(Path(path), seconds=20, fps=10, options={"g": "80"}).read_bytes()


@pytest.mark.parametrize(("policy", "plan"), [("cheapest", "after_keyframes"), ("exact", "exact")])
async def test_the_policy_decides_which_frames_are_analysed(
    start_server: StartServer, triton: TritonServer, long_gops: bytes, policy: str, plan: str
) -> None:
    running = await start_server(
        triton_url=triton.grpc_url, analysis_workers=0, frame_policy=policy
    )
    result = await running.client().upload(long_gops, model="frame_ensemble")  # a score per frame
    assert result.upload_status == upload_pb2.UPLOAD_STATUS_ANALYZED
    detection = result.detection_result
    assert detection.frame_policy == plan
    times = list(detection.frame_times)
    assert len(times) == detection.frames_analyzed == len(detection.frame_scores) == 32
    assert times == sorted(set(times))
    if plan == "exact":  # evenly spaced: 19.9 s / 32 = 0.62 s apart, on 0.1 s frames
        assert all(0.55 <= b - a <= 0.75 for a, b in itertools.pairwise(times)), times
    else:  # every keyframe (0, 8, 16 s), each followed by the frames right after it
        assert {0.0, 8.0, 16.0} <= set(times)
        assert times[:3] == pytest.approx([0.0, 0.1, 0.2])
