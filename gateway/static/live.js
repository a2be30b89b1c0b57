// The web app's "Live" tab: the camera (getUserMedia) or a chosen video file, played at its own pace, is
// streamed to the WebSocket /v1/streams and each result's face boxes, scores and running verdicts are drawn
// on a canvas over the video as they arrive. Uses app.js's helpers ($, element, apiKey, showError,
// clearError, VERDICT_WORDS); plain browser JavaScript like the rest of the page.
//
// Why JPEG frames and not MediaRecorder's WebM byte stream: every frame is sent with its own time (the
// file's media time, so a result's `t` is a moment of the video), the page bounds the rate and the size of
// what it sends and skips frames when the connection is behind, and the boxes that come back are in the
// pixels of the frame it drew, so mapping them onto the video is one scale factor.
"use strict";

const LIVE_MAX_FPS = 30; // frames sent per second at most (the analysis takes every 2nd: FRAME_STRIDE)
const LIVE_MAX_SIDE = 1280; // longer side of a sent frame; larger sources are scaled down (720p)
const LIVE_JPEG_QUALITY = 0.85;
const LIVE_MAX_BUFFERED = 1 << 20; // bytes queued in the socket beyond which a frame is skipped, not queued
const LIVE_STALE_MS = 3000; // boxes with no newer result than this are cleared (the face left, or results stopped)
// One sentence per close code of /v1/streams (README, Live streams); the server's own message follows it.
const CLOSE_WORDS = {
  1006: "The connection to the service was lost.",
  1011: "The analysis failed on the server; it was logged.",
  4400: "The service did not understand a message from this page.",
  4401: "The API key was refused. Check it and try again.",
  4408: "Nothing was sent for too long (was the video paused or the tab hidden?), so the stream was closed.",
  4413: "A frame was too large for the service.",
  4415: "The service could not read the frames as images.",
  4422: "The video is too small to analyse.",
  4429: "Too many live streams are open for this API key, or it is rate limited: stop another stream (another tab?) and try again.",
  4503: "The analysis service is unavailable or busy. Try again in a minute.",
};

let live = null; // the running stream, see startLive

function describeClose(code, error) {
  let text = CLOSE_WORDS[code] || "The stream was closed (code " + code + ").";
  if (error) text += " (" + error.code + ": " + error.message + ")";
  return text;
}

function streamUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // A browser cannot set headers on a WebSocket: the key goes in the query (the gateway accepts either).
  return scheme + "://" + location.host + "/v1/streams?api_key=" + encodeURIComponent(apiKey());
}

function setLiveBusy(running) {
  $("live-stop").disabled = !running;
  $("live-camera").disabled = running;
  $("live-file").disabled = running;
}

function resetLiveView() {
  $("live-results").textContent = "0";
  $("live-latency").textContent = "-";
  $("live-sent").textContent = "0";
  $("live-dropped").textContent = "-";
  $("live-faces").replaceChildren();
  $("live-final").hidden = true;
  clearOverlay();
}

async function openMedia(file) {
  const video = $("live-video");
  if (file) {
    const url = URL.createObjectURL(file);
    video.srcObject = null;
    video.src = url;
    return { stream: null, url };
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("this browser gives no camera to this page (it needs https or localhost)");
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 1280 }, height: { ideal: 720 } },
    audio: false,
  });
  video.removeAttribute("src");
  video.srcObject = stream;
  return { stream, url: null };
}

function cameraProblem(err) {
  if (err.name === "NotAllowedError") return "The camera was not allowed. Allow it for this page and try again.";
  if (err.name === "NotFoundError" || err.name === "OverconstrainedError") return "No camera was found.";
  if (err.name === "NotReadableError") return "The camera is in use by another program.";
  return "Could not open the video: " + err.message;
}

async function startLive(file = null) {
  if (live) return;
  if (!apiKey()) {
    showError("Enter your API key first.");
    return;
  }
  localStorage.setItem("deepfake-key", apiKey());
  clearError();
  resetLiveView();
  setLiveBusy(true);
  $("live-status").textContent = file ? "Opening " + file.name : "Opening the camera";
  let media;
  try {
    media = await openMedia(file);
  } catch (err) {
    showError(cameraProblem(err));
    setLiveBusy(false);
    $("live-status").textContent = "";
    return;
  }
  const video = $("live-video");
  video.closest(".live-stage").hidden = false;
  const ws = new WebSocket(streamUrl());
  live = {
    ws, file, ...media,
    capture: document.createElement("canvas"), // the frame as sent (scaled to LIVE_MAX_SIDE)
    started: performance.now(), lastSentAt: -Infinity, lastT: -1, encoding: false, ending: false, stopped: false,
    sent: 0, skipped: 0, results: 0, lastResultAt: 0, sentAt: new Map(), error: null,
  };
  const current = live;
  ws.onopen = async () => {
    try {
      await video.play();
    } catch (err) {
      if (live !== current) return; // closed meanwhile (a refusal): its message is the one to show
      showError("Could not play the video: " + err.message);
      stopLive();
      return;
    }
    if (live !== current) return;
    $("live-status").textContent = "Streaming " + (file ? file.name : "the camera") + ": the first scores come within a few seconds";
    nextFrame(current);
  };
  ws.onmessage = (event) => onLiveMessage(current, JSON.parse(event.data));
  ws.onclose = (event) => onLiveClose(current, event.code);
  video.onended = () => stopLive();
}

function nextFrame(stream) {
  const video = $("live-video");
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback((now, meta) => onFrame(stream, now, meta));
  else requestAnimationFrame((now) => onFrame(stream, now, null));
}

// Called once per new video frame: sends it unless the rate bound, the encoder or the socket says skip.
function onFrame(stream, now, meta) {
  if (live !== stream || stream.ending || stream.ws.readyState !== WebSocket.OPEN) return;
  nextFrame(stream);
  if (performance.now() - stream.lastResultAt > LIVE_STALE_MS) clearOverlay();
  if (now - stream.lastSentAt < 1000 / LIVE_MAX_FPS - 4) return; // the rate bound (4 ms of frame jitter)
  const video = $("live-video");
  const mediaTime = meta ? meta.mediaTime : video.currentTime;
  // Milliseconds, as the results give it back (their `t`), so a result finds the frame it was sent with.
  const t = Math.round((stream.file ? mediaTime : (now - stream.started) / 1000) * 1000) / 1000;
  if (t <= stream.lastT || !video.videoWidth) return; // the same frame again (or none yet)
  if (stream.encoding || stream.ws.bufferedAmount > LIVE_MAX_BUFFERED) {
    stream.skipped += 1;
    return;
  }
  stream.lastSentAt = now;
  stream.lastT = t;
  const scale = Math.min(1, LIVE_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
  const canvas = stream.capture;
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  stream.encoding = true;
  canvas.toBlob(async (blob) => {
    const bytes = blob ? await blob.arrayBuffer() : null;
    stream.encoding = false;
    if (!bytes || stream.ending || stream.ws.readyState !== WebSocket.OPEN) return;
    // The time, then its frame: two messages sent back to back, never with another frame between.
    stream.ws.send(JSON.stringify({ t }));
    stream.ws.send(bytes);
    stream.sentAt.set(t, performance.now());
    stream.sent += 1;
    $("live-sent").textContent = String(stream.sent);
  }, "image/jpeg", LIVE_JPEG_QUALITY);
}

function onLiveMessage(stream, message) {
  if (message.type === "error") {
    stream.error = message.error; // the close code follows
  } else if (message.type === "result") {
    showResult(stream, message);
  } else if (message.type === "final") {
    showFinal(message);
  }
}

function showResult(stream, result) {
  stream.results += 1;
  stream.lastResultAt = performance.now();
  $("live-results").textContent = String(stream.results);
  // Round trip: from sending the newest frame of the scored windows to this result arriving here.
  let latency = Math.round(result.latency_ms) + " ms in the analysis";
  const sentAt = stream.sentAt.get(result.t);
  if (sentAt !== undefined) latency += ", " + Math.round(performance.now() - sentAt) + " ms from this page and back";
  for (const t of stream.sentAt.keys()) if (t <= result.t) stream.sentAt.delete(t); // bounded
  $("live-latency").textContent = latency;
  $("live-dropped").textContent = result.frames_dropped + " of " + result.frames_received +
    " received frames (analysis behind); " + stream.skipped + " skipped by this page (connection behind)";
  drawOverlay(stream, result.tracks);
  $("live-faces").replaceChildren(...result.tracks.map((track) => element("li", { "data-testid": "live-face" },
    "Face " + track.id + ": " + VERDICT_WORDS[track.verdict] + " so far, smoothed score " +
    track.smoothed.toFixed(2) + " (latest window " + track.score.toFixed(2) + ", " + windows(track.windows) +
    " up to " + track.window[1].toFixed(1) + " s)")));
}

function windows(count) {
  return count + (count === 1 ? " window" : " windows");
}

function overlayLabel(track) {
  return "Face " + track.id + ": " + track.smoothed.toFixed(2) + " " + track.verdict;
}

function clearOverlay() {
  const canvas = $("live-overlay");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  canvas.setAttribute("aria-label", "No face scored yet");
}

// The boxes are in the pixels of the frame sent; the canvas has the video's own size and lies over it.
function drawOverlay(stream, tracks) {
  const video = $("live-video"), canvas = $("live-overlay");
  if (canvas.width !== video.videoWidth || canvas.height !== video.videoHeight) {
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
  }
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const scale = canvas.width / (stream.capture.width || canvas.width);
  const perCssPixel = canvas.width / (canvas.clientWidth || canvas.width); // labels readable on a phone too
  const size = Math.round(Math.max(14 * perCssPixel, canvas.width / 45));
  context.lineWidth = Math.max(2 * perCssPixel, canvas.width / 320);
  context.font = "bold " + size + "px system-ui, sans-serif";
  for (const track of tracks) {
    const [x1, y1, x2, y2] = track.box.map((v) => v * scale);
    const colour = track.verdict === "fake" ? "#d00000" : "#007a28";
    context.strokeStyle = colour;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = overlayLabel(track);
    const height = size * 1.4;
    const top = y1 - height >= 0 ? y1 - height : y2; // above the box, or below it at the frame's top
    context.fillStyle = colour;
    context.fillRect(x1, top, context.measureText(text).width + size * 0.6, height);
    context.fillStyle = "#fff";
    context.fillText(text, x1 + size * 0.3, top + size * 1.05);
  }
  canvas.setAttribute("aria-label", tracks.length ? tracks.map(overlayLabel).join("; ") : "No face scored yet");
}

function showFinal(summary) {
  const box = $("live-final");
  box.className = "verdict " + summary.verdict;
  let text = "Whole stream: " + VERDICT_WORDS[summary.verdict];
  if (summary.score != null) text += " — score " + summary.score.toFixed(2) + " (threshold " + summary.threshold.toFixed(2) + ")";
  box.textContent = text;
  box.hidden = false;
  $("live-faces").replaceChildren(...summary.tracks.map((track) => element("li", { "data-testid": "live-face" },
    "Face " + track.id + ": mean score " + track.score.toFixed(2) + " over " + windows(track.windows) + ", " +
    track.start_s.toFixed(1) + " s to " + track.end_s.toFixed(1) + " s" + (track.used_for_verdict ? "" : " (too small or brief to count)"))));
  clearOverlay();
}

// Stop: ask for the summary (the server then closes with 1000); the camera goes off at once.
function stopLive() {
  const stream = live;
  if (!stream || stream.ending) return;
  stream.ending = true;
  stream.stopped = true;
  $("live-video").pause();
  releaseMedia(stream);
  if (stream.ws.readyState === WebSocket.OPEN) {
    stream.ws.send(JSON.stringify({ type: "end" }));
    $("live-status").textContent = "Finishing: waiting for the summary";
  } else {
    stream.ws.close();
  }
}

function releaseMedia(stream) {
  if (stream.stream) for (const track of stream.stream.getTracks()) track.stop();
  if (stream.url) URL.revokeObjectURL(stream.url);
  stream.stream = null;
  stream.url = null;
}

function onLiveClose(stream, code) {
  if (live !== stream) return;
  live = null;
  stream.ending = true;
  $("live-video").pause();
  releaseMedia(stream);
  setLiveBusy(false);
  clearOverlay();
  if (code === 1000 || (stream.stopped && !stream.error)) { // stopped before it opened: nothing went wrong
    $("live-status").textContent = "Stream ended after " + stream.sent + " frames and " + stream.results + " results.";
    return;
  }
  $("live-status").textContent = "Stream stopped.";
  showError(describeClose(code, stream.error));
}

document.addEventListener("DOMContentLoaded", () => {
  $("live-camera").addEventListener("click", () => startLive());
  $("live-file").addEventListener("change", () => {
    const file = $("live-file").files[0];
    $("live-file").value = ""; // choosing the same file again starts it again
    if (file) startLive(file);
  });
  $("live-stop").addEventListener("click", stopLive);
  // A hidden video gets no frame callbacks: leaving the tab ends the stream (with its summary) rather than
  // letting it idle out.
  document.addEventListener("tabchange", (event) => { if (event.detail !== "tab-live") stopLive(); });
});
