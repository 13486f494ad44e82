// vidscan's upload page: token, file, progress, automatic resume, verdict, recent videos.
import { Api, ApiError } from "./api.js";
import { bytes, duration, SpeedMeter } from "./format.js";
import { startUpload } from "./upload.js";

const TOKEN_KEY = "vidscan.token";
const $ = (id) => document.getElementById(id);

const state = { token: localStorage.getItem(TOKEN_KEY) || "", upload: null };

// The page's state, also readable by tests: idle, uploading, reconnecting,
// processing, done, error.
function setState(name, text) {
  document.body.dataset.state = name;
  $("state").textContent = text;
}

function show(id, visible) {
  $(id).hidden = !visible;
}

function api() {
  return new Api(state.token);
}

function saveToken(event) {
  event.preventDefault();
  state.token = $("token-input").value.trim();
  if (state.token) localStorage.setItem(TOKEN_KEY, state.token);
  else localStorage.removeItem(TOKEN_KEY);
  $("token-status").textContent = state.token ? "Token saved in this browser." : "No token.";
  refreshRecent();
}

function showError(error) {
  const e = error instanceof ApiError ? error : new ApiError(0, "", String(error), {});
  $("error-reason").textContent = e.reason || (e.status ? `HTTP ${e.status}` : "NETWORK_ERROR");
  $("error-message").textContent = e.message;
  show("error", true);
}

function pick(files) {
  if (!files || files.length === 0) return;
  const file = files[0];
  if (state.upload) state.upload.abort();
  show("error", false);
  show("verdict", false);
  show("progress", true);
  $("file-name").textContent = `${file.name} (${bytes(file.size)})`;
  $("bar").value = 0;
  $("percent").textContent = "0 %";
  $("speed").textContent = "";
  $("eta").textContent = "";
  $("retries").textContent = "";
  const meter = new SpeedMeter();
  setState("uploading", "Uploading…");
  state.upload = startUpload(file, state.token, {
    onSession: (sessionId) => {
      $("session-id").textContent = sessionId;
    },
    onProgress: (sent, total) => {
      meter.add(sent);
      const rate = meter.rate();
      const percent = total > 0 ? (100 * sent) / total : 0;
      $("bar").value = percent;
      $("percent").textContent = `${percent.toFixed(1)} %`;
      $("speed").textContent = rate > 0 ? `${bytes(rate)}/s` : "";
      $("eta").textContent = rate > 0 ? `${duration((total - sent) / rate)} left` : "";
      if (document.body.dataset.state !== "uploading") setState("uploading", "Uploading…");
      if (sent === total) setState("processing", "Checking and analysing…");
    },
    onRetry: (attempt) => {
      meter.reset();
      setState("reconnecting", "Connection lost; resuming where it stopped…");
      $("retries").textContent = `resumed ${attempt}×`;
    },
    onSuccess: (sessionId) => {
      setState("processing", "Checking and analysing…");
      finish(sessionId).catch((error) => {
        setState("error", "Failed");
        showError(error);
      });
    },
    onError: (error) => {
      setState("error", "Refused");
      showError(error);
    },
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The UploadResult, then the analysis until it is done (a worker may analyse it later).
// Enums arrive in the REST API's spelling: upload_status "analyzed" | "processing" |
// "analysis_failed", analysis status "pending" | "running" | "analyzed" | "failed".
async function finish(sessionId) {
  const result = await api().uploadResult(sessionId);
  let detection = result.detection_result;
  let status = result.upload_status;
  let failure = "";
  for (let i = 0; status === "processing" && i < 600; i += 1) {
    await sleep(1000);
    const analysis = await api().analysis(result.analysis_id);
    if (analysis.status === "analyzed") {
      detection = analysis.detection;
      status = "analyzed";
    } else if (analysis.status === "failed") {
      status = "analysis_failed";
      failure = `${analysis.failure_reason}: ${analysis.failure_message}`;
    }
  }
  if (status === "analysis_failed" && !failure) {
    const analysis = await api().analysis(result.analysis_id);
    failure = `${analysis.failure_reason}: ${analysis.failure_message}`;
  }
  renderVerdict(result, detection, status, failure);
  setState("done", "Done");
  refreshRecent();
}

function renderVerdict(result, detection, status, failure) {
  $("video-id").textContent = result.video_id;
  $("verdict-dedup").hidden = !result.deduplicated;
  const list = $("faces");
  list.replaceChildren();
  if (status !== "analyzed" || !detection) {
    $("verdict-label").textContent = "Stored; analysis failed";
    $("verdict-detail").textContent = failure || "see the analysis for the reason";
    $("disclaimer").textContent = "";
    show("verdict", true);
    return;
  }
  $("disclaimer").textContent = detection.reference_model
    ? detection.disclaimer || "Reference model: its scores are not a trained detector's and mean nothing."
    : detection.disclaimer || "";
  $("disclaimer").hidden = !$("disclaimer").textContent;
  const model = `model ${detection.model_name} ${detection.model_version}`;
  if (detection.outcome === "no_face_detected") {
    $("verdict-label").textContent = "No face found: nothing judged";
    $("verdict-detail").textContent = `${detection.outcome_reason} (${model})`;
  } else {
    const percent = (100 * detection.confidence).toFixed(1);
    $("verdict-label").textContent = detection.is_fake ? "Flagged as fake" : "Not flagged";
    const faces = detection.face_detector
      ? `${detection.faces_analyzed} faces in ${detection.frames_with_faces} of `
      : "";
    $("verdict-detail").textContent =
      `${percent} % (threshold ${(100 * detection.threshold).toFixed(0)} %), ` +
      `${faces}${detection.frames_analyzed} frames, ${model}`;
  }
  // Faces (face models): where each was, the detector's and the classifier's scores.
  for (const frame of detection.faces || []) {
    for (const face of frame.faces || []) {
      const item = document.createElement("li");
      const box = face.box || {};
      item.textContent =
        `${Number(frame.time_seconds).toFixed(1)} s: face at (${Math.round(box.x1)}, ${Math.round(box.y1)})–` +
        `(${Math.round(box.x2)}, ${Math.round(box.y2)}), detector ${(100 * face.detector_score).toFixed(0)} %, ` +
        `classifier ${(100 * face.fake_probability).toFixed(1)} %`;
      list.append(item);
    }
  }
  show("verdict", true);
}

// #videos gets data-loaded="yes" once the list for the current token arrived (or failed).
async function refreshRecent() {
  const body = $("videos");
  body.dataset.loaded = "no";
  try {
    await loadRecent(body);
  } finally {
    body.dataset.loaded = "yes";
  }
}

async function loadRecent(body) {
  if (!state.token) {
    body.replaceChildren();
    $("recent-status").textContent = "Paste a token to see your videos.";
    return;
  }
  try {
    const page = await api().recentVideos(10);
    const rows = (page.videos || []).map((video) => {
      const row = document.createElement("tr");
      for (const text of [
        video.filename,
        bytes(Number(video.file_size)),
        video.status,
        video.created_at ? new Date(video.created_at).toLocaleString() : "",
      ]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    });
    body.replaceChildren(...rows);
    $("recent-status").textContent = rows.length ? "" : "No videos yet.";
  } catch (error) {
    $("recent-status").textContent = error instanceof ApiError ? `${error.reason || error.status}: ${error.message}` : String(error);
  }
}

function wire() {
  $("token-input").value = state.token;
  $("token-form").addEventListener("submit", saveToken);
  $("file").addEventListener("change", (event) => pick(event.target.files));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    pick(event.dataTransfer.files);
  });
  setState("idle", "Pick a video to upload.");
  refreshRecent();
}

wire();
