"""The bundled REFERENCE models served by a real tritonserver (CPU, python backend).

Why: vidscan's analysis path talks to Triton over gRPC; these tests pin the model
repository's I/O contract (input ``frames`` FP32 NCHW [N,3,224,224], ImageNet-normalised
RGB; output ``fake_probability`` FP32 [N,1] in [0,1]) on the real server, including the
ensemble, the contract parameters clients read with get_model_config, refusal of bad
inputs, dynamic batching of concurrent requests, and a crash/restart of the server.
The models are untrained (seeded weights): the tests check shapes, ranges, determinism
and plumbing, never what the scores "mean".
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support.triton import (
    BUILD_SCRIPT,
    REPO_ROOT,
    TritonNotInstalledError,
    TritonServer,
    start_triton,
    triton_home,
)
from tritonclient.utils import InferenceServerException

MODEL_REPOSITORY = REPO_ROOT / "models"
CLASSIFIERS = ("frame_resnet", "frame_cnn")
CONTRACT_MODELS = (*CLASSIFIERS, "frame_ensemble")
ALL_MODELS = sorted((*CONTRACT_MODELS, "score_mean"))
MAX_BATCH = 32
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CONTRACT_PARAMETERS = {
    "reference_model": "true",
    "contract_version": "vidscan.frames.v1",
    "input_name": "frames",
    "input_datatype": "FP32",
    "input_layout": "NCHW",
    "input_shape": "[-1,3,224,224]",
    "input_color_order": "RGB",
    "input_size": "224x224",
    "input_pixel_scale": "0.00392156862745098",
    "input_normalization_mean": "0.485,0.456,0.406",
    "input_normalization_std": "0.229,0.224,0.225",
    "output_name": "fake_probability",
    "output_datatype": "FP32",
    "output_shape": "[-1,1]",
}


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = start_triton(
        model_repository=MODEL_REPOSITORY, workdir=tmp_path_factory.mktemp("triton")
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(triton: TritonServer) -> Iterator[Any]:
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        yield c


def make_frames(count: int, seed: int) -> np.ndarray:
    """Random RGB uint8 images, preprocessed exactly as the contract says."""
    rgb = np.random.default_rng(seed).integers(0, 256, size=(count, 224, 224, 3), dtype=np.uint8)
    scaled = rgb.astype(np.float32) / 255.0
    normalised = (scaled - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2), dtype=np.float32)


def infer(client: Any, model: str, frames: np.ndarray, datatype: str = "FP32") -> np.ndarray:
    inp = grpcclient.InferInput("frames", list(frames.shape), datatype)
    inp.set_data_from_numpy(frames)
    result = client.infer(
        model,
        [inp],
        outputs=[grpcclient.InferRequestedOutput("fake_probability")],
        client_timeout=60.0,
    )
    out: np.ndarray = result.as_numpy("fake_probability")
    return out


def test_every_model_is_ready(triton: TritonServer, client: Any) -> None:
    assert triton.ready_models == ALL_MODELS
    assert client.is_server_live()
    assert client.is_server_ready()
    for model in ALL_MODELS:
        assert client.is_model_ready(model), model


@pytest.mark.parametrize("model", CONTRACT_MODELS)
def test_batch_of_five_frames_gives_one_probability_each(client: Any, model: str) -> None:
    frames = make_frames(5, seed=7)
    first = infer(client, model, frames)
    second = infer(client, model, frames)
    assert first.shape == (5, 1)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert ((first >= 0.0) & (first <= 1.0)).all()
    np.testing.assert_array_equal(first, second)  # deterministic across calls


def test_ensemble_is_the_mean_of_its_members(client: Any) -> None:
    frames = make_frames(4, seed=11)
    members = [infer(client, model, frames) for model in CLASSIFIERS]
    ensemble = infer(client, "frame_ensemble", frames)
    np.testing.assert_allclose(ensemble, np.mean(members, axis=0), rtol=0, atol=1e-6)
    assert not np.array_equal(members[0], members[1])  # two genuinely different networks


def test_full_batch_of_32_frames(client: Any) -> None:
    frames = make_frames(MAX_BATCH, seed=3)
    for model in CONTRACT_MODELS:
        out = infer(client, model, frames)
        assert out.shape == (MAX_BATCH, 1)
        assert ((out >= 0.0) & (out <= 1.0)).all()


def test_concurrent_requests_are_batched_and_split_correctly(client: Any) -> None:
    sizes = (1, 3, 5, 7)
    batches = [make_frames(n, seed=100 + n) for n in sizes]
    expected = [infer(client, "frame_cnn", frames) for frames in batches]
    results: dict[int, Any] = {}
    done = threading.Event()
    lock = threading.Lock()

    def callback(index: int, result: Any, error: Any) -> None:
        with lock:
            results[index] = error if error is not None else result.as_numpy("fake_probability")
            if len(results) == len(sizes):
                done.set()

    for index, frames in enumerate(batches):
        inp = grpcclient.InferInput("frames", list(frames.shape), "FP32")
        inp.set_data_from_numpy(frames)
        client.async_infer(
            "frame_cnn",
            [inp],
            callback=lambda result, error, i=index: callback(i, result, error),
            outputs=[grpcclient.InferRequestedOutput("fake_probability")],
        )
    assert done.wait(60)
    for index, want in enumerate(expected):
        got = results[index]
        assert isinstance(got, np.ndarray), got
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", CONTRACT_MODELS)
def test_config_parameters_carry_the_contract(client: Any, model: str) -> None:
    config = client.get_model_config(model, as_json=True)["config"]
    parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
    for key, value in CONTRACT_PARAMETERS.items():
        assert parameters.get(key) == value, key
    assert "meaningless" in parameters["reference_model_note"]
    assert config["max_batch_size"] == MAX_BATCH
    [inp] = config["input"]
    assert (inp["name"], inp["data_type"], inp["dims"]) == (
        "frames",
        "TYPE_FP32",
        ["3", "224", "224"],
    )
    [out] = config["output"]
    assert (out["name"], out["data_type"], out["dims"]) == ("fake_probability", "TYPE_FP32", ["1"])
    if model == "frame_ensemble":
        assert config["platform"] == "ensemble"
        steps = [step["model_name"] for step in config["ensemble_scheduling"]["step"]]
        assert steps == ["frame_resnet", "frame_cnn", "score_mean"]
    else:
        assert config["backend"] == "python"
        assert "dynamic_batching" in config
        [group] = config["instance_group"]
        assert (group["kind"], group["count"]) == ("KIND_CPU", 1)
        assert parameters["ort_intra_op_num_threads"] == "1"


def test_score_mean_is_marked_reference(client: Any) -> None:
    config = client.get_model_config("score_mean", as_json=True)["config"]
    assert config["parameters"]["reference_model"]["string_value"] == "true"


@pytest.mark.parametrize("model", CONTRACT_MODELS)
@pytest.mark.parametrize(
    ("shape", "datatype", "message"),
    [
        ((2, 3, 100, 100), "FP32", "unexpected shape"),
        ((2, 224, 224, 3), "FP32", "unexpected shape"),  # NHWC instead of NCHW
        ((MAX_BATCH + 1, 3, 224, 224), "FP32", "batch-size must be <= 32"),
        ((1, 3, 224, 224), "FP64", "data-type is 'FP64'"),
    ],
    ids=["small-image", "nhwc", "batch-too-big", "fp64"],
)
def test_bad_input_is_refused(
    client: Any, model: str, shape: tuple[int, ...], datatype: str, message: str
) -> None:
    frames = np.zeros(shape, dtype=np.float64 if datatype == "FP64" else np.float32)
    with pytest.raises(InferenceServerException) as caught:
        infer(client, model, frames, datatype=datatype)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in caught.value.message()


@pytest.mark.parametrize("model", CLASSIFIERS)
def test_non_finite_frames_are_refused(client: Any, model: str) -> None:
    frames = make_frames(2, seed=5)
    frames[1, 0, 0, 0] = np.nan
    with pytest.raises(InferenceServerException) as caught:
        infer(client, model, frames)
    assert "NaN or Inf" in caught.value.message()


def test_model_py_copies_are_identical() -> None:
    resnet, cnn = (MODEL_REPOSITORY / m / "1" / "model.py" for m in CLASSIFIERS)
    assert resnet.read_bytes() == cnn.read_bytes()


def test_reference_onnx_files_are_reproducible(triton: TritonServer) -> None:
    # The server runs files built by start_triton(); a fresh in-memory build must match.
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_comes_back_after_sigkill(triton: TritonServer) -> None:
    # Last in this module on purpose: it kills the shared server and restarts it.
    frames = make_frames(2, seed=9)
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        before = infer(c, "frame_ensemble", frames)
    triton.kill()
    assert not triton.is_running()
    with (
        grpcclient.InferenceServerClient(triton.grpc_url) as c,
        pytest.raises(InferenceServerException),
    ):
        c.is_server_live(client_timeout=2.0)
    triton.restart()
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        np.testing.assert_array_equal(infer(c, "frame_ensemble", frames), before)


def test_missing_install_names_the_install_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VIDSCAN_TOOLS_ROOT", str(tmp_path))
    with pytest.raises(TritonNotInstalledError, match=r"scripts/install-triton\.sh"):
        triton_home()
