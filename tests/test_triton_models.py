"""The bundled REFERENCE models served by a real tritonserver (CPU, python backend).

Why: vidscan's analysis path talks to Triton over gRPC; these tests pin the model
repository's I/O contract (input ``frames`` UINT8 NHWC [N,224,224,3] RGB pixels,
normalised inside the model; output ``fake_probability`` FP32 [N,1] in [0,1]) on the
real server, including the ensemble, the contract parameters clients read with
get_model_config, refusal of bad inputs, dynamic batching of concurrent requests,
frames handed over in system shared memory, and a crash/restart of the server.
The models are untrained (seeded weights): the tests check shapes, ranges, determinism
and plumbing, never what the scores "mean".
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime  # type: ignore[import-untyped]
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
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
FACE_MODELS = ("face_yunet", "face_ensemble")  # tests/test_faces.py
ALL_MODELS = sorted((*CONTRACT_MODELS, "score_mean", *FACE_MODELS))
MAX_BATCH = 32
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CONTRACT_PARAMETERS = {
    "reference_model": "true",
    "contract_version": "vidscan.frames.v2",
    "input_name": "frames",
    "input_datatype": "UINT8",
    "input_layout": "NHWC",
    "input_shape": "[-1,224,224,3]",
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
    """Random RGB uint8 images, as decoded: the contract wants no preprocessing."""
    rgb = np.random.default_rng(seed).integers(0, 256, size=(count, 224, 224, 3), dtype=np.uint8)
    return rgb


def infer(client: Any, model: str, frames: np.ndarray, datatype: str = "UINT8") -> np.ndarray:
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
        inp = grpcclient.InferInput("frames", list(frames.shape), "UINT8")
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
        "TYPE_UINT8",
        ["224", "224", "3"],
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
        ((2, 100, 100, 3), "UINT8", "unexpected shape"),
        ((2, 3, 224, 224), "UINT8", "unexpected shape"),  # NCHW instead of NHWC
        ((MAX_BATCH + 1, 224, 224, 3), "UINT8", "batch-size must be <= 32"),
        ((1, 224, 224, 3), "FP32", "data-type is 'FP32'"),  # the older, 4x larger form
    ],
    ids=["small-image", "nchw", "batch-too-big", "fp32"],
)
def test_bad_input_is_refused(
    client: Any, model: str, shape: tuple[int, ...], datatype: str, message: str
) -> None:
    frames = np.zeros(shape, dtype=np.float32 if datatype == "FP32" else np.uint8)
    with pytest.raises(InferenceServerException) as caught:
        infer(client, model, frames, datatype=datatype)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in caught.value.message()


def test_the_model_normalises_as_its_contract_says() -> None:
    # The graph's first nodes alone: UINT8 NHWC in, the documented FP32 NCHW out.
    spec = importlib.util.spec_from_file_location("build_reference_models", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    build: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    graph = build.GraphBuilder(seed=0)
    graph.nodes.append(onnx.helper.make_node("Identity", [graph.normalised_input()], ["out"]))
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            graph.nodes,
            "normalise",
            [onnx.helper.make_tensor_value_info("frames", onnx.TensorProto.UINT8, None)],
            [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)],
            initializer=graph.initializers,
        ),
        opset_imports=[onnx.helper.make_opsetid("", build.OPSET)],
    )
    model.ir_version = build.IR_VERSION
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    rgb = make_frames(2, seed=5)
    (got,) = session.run(["out"], {"frames": rgb})
    want = ((rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", CONTRACT_MODELS)
def test_frames_in_system_shared_memory_score_as_inline(client: Any, model: str) -> None:
    frames = make_frames(3, seed=21)
    inline = infer(client, model, frames)
    name = f"test_frames_{model}"
    handle = shm.create_shared_memory_region(name, name, frames.nbytes, create_only=True)
    try:
        shm.set_shared_memory_region(handle, [frames])
        client.register_system_shared_memory(name, f"/{name}", frames.nbytes)
        try:
            inp = grpcclient.InferInput("frames", list(frames.shape), "UINT8")
            inp.set_shared_memory(name, frames.nbytes)
            result = client.infer(
                model, [inp], outputs=[grpcclient.InferRequestedOutput("fake_probability")]
            )
        finally:
            client.unregister_system_shared_memory(name)
    finally:
        shm.destroy_shared_memory_region(handle)
    np.testing.assert_array_equal(result.as_numpy("fake_probability"), inline)
    assert not Path(f"/dev/shm/{name}").exists()


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
