// One file's trip through tus: resumable, retried on its own after a dropped
// connection, remembered in localStorage so that a reload resumes it too.
import * as tus from "tus-js-client";
import { errorFrom } from "./api.js";

// Waits between automatic retries after a failure that is not a refusal (a dropped
// connection, a gateway or server restarting): about a minute and a half in all.
export const RETRY_DELAYS = [0, 1000, 2000, 4000, 8000, 15000, 30000, 30000];

// The final PATCH answers Vidscan-Result (a path to GET the UploadResult); the
// session id is the last segment of the upload URL either way.
export function sessionIdOf(uploadUrl) {
  const path = new URL(uploadUrl, window.location.href).pathname;
  return decodeURIComponent(path.split("/").filter(Boolean).pop() || "");
}

// A refusal (4xx other than tus's 409 offset mismatch, 423 locked, 429 slow down) is
// final; anything else is worth another try from the committed offset.
function retryable(error) {
  const response = error && error.originalResponse;
  const status = response ? response.getStatus() : 0;
  return !(status >= 400 && status < 500 && status !== 409 && status !== 423 && status !== 429);
}

// events: onProgress(sent, total), onRetry(attempt, error), onResumed(offset),
// onSuccess(sessionId), onError(ApiError).
export function startUpload(file, token, events) {
  let retries = 0;
  const upload = new tus.Upload(file, {
    endpoint: "/v1/tus/",
    retryDelays: RETRY_DELAYS,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
    onProgress: (sent, total) => events.onProgress(sent, total),
    onShouldRetry: (error) => {
      if (!retryable(error)) return false;
      retries += 1;
      events.onRetry(retries, error);
      return true;
    },
    onUploadUrlAvailable: () => events.onSession(sessionIdOf(upload.url)),
    onSuccess: () => events.onSuccess(sessionIdOf(upload.url)),
    onError: (error) => {
      const response = error.originalResponse;
      events.onError(response ? errorFrom(response.getStatus(), response.getBody()) : errorFrom(0, error.message));
    },
  });
  upload.findPreviousUploads().then(
    (previous) => {
      const same = previous.filter((p) => p.size === file.size);
      if (same.length > 0) upload.resumeFromPreviousUpload(same[0]);
      upload.start();
    },
    () => upload.start(),
  );
  return upload;
}
