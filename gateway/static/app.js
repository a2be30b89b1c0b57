// The gateway's web app: upload a video as a job, follow it, show the verdict and the evidence (the
// "Analyse a file" tab; the "Live" tab is live.js, which uses the helpers here: $, element, apiKey, showError).
// Plain browser JavaScript, no framework and nothing from a CDN: the page must work offline and behind
// the same API key as the REST API (every request sends X-API-Key; images are fetched as blobs because an
// <img src> cannot carry a header).
"use strict";

const $ = (id) => document.getElementById(id);
const VERDICT_WORDS = {
  fake: "Likely manipulated",
  real: "No manipulation found",
  inconclusive: "Inconclusive: no usable face was found",
};
const STATE_WORDS = { queued: "Waiting for a free analysis worker", running: "Analysing", succeeded: "Done", failed: "Failed" };
let busy = false;
let shownJob = null;
let shownResult = null;
let objectUrls = [];

class ApiError extends Error {
  constructor(status, body, retryAfter = null) {
    const error = body && body.error ? body.error : { code: "http_" + status, message: "the server answered " + status };
    super(error.message);
    this.code = error.code;
    this.status = status;
    this.retryAfter = retryAfter; // seconds, from the Retry-After header (429, 503)
  }
}

function apiKey() {
  return $("key").value.trim();
}

function showError(text) {
  const box = $("error");
  box.textContent = text; // replaces any earlier error
  box.hidden = false;
}

function clearError() {
  $("error").textContent = "";
  $("error").hidden = true;
}

function describe(err) {
  if (err instanceof ApiError) {
    // The same words as the live tab's refusal (live.js CLOSE_WORDS 4401), with the server's code and message:
    // a job-list refresh and a refused stream may both answer one wrong key, the later replacing the other.
    if (err.status === 401) return "The API key was refused. Check it and try again. (" + err.code + ": " + err.message + ")";
    return err.message.charAt(0).toUpperCase() + err.message.slice(1) + " (" + err.code + ")";
  }
  return "Could not reach the service: " + err.message;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { "X-API-Key": apiKey(), ...(options.headers || {}) } });
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, body, Number(response.headers.get("retry-after")) || null);
  return body;
}

async function blobUrl(path) {
  const response = await fetch(path, { headers: { "X-API-Key": apiKey() } });
  if (!response.ok) throw new ApiError(response.status, null);
  const url = URL.createObjectURL(await response.blob());
  objectUrls.push(url);
  return url;
}

function megabytes(bytes) {
  return (bytes / 1e6).toFixed(1) + " MB";
}

// XMLHttpRequest, not fetch: only it reports upload progress.
function upload(file) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/jobs");
    request.setRequestHeader("X-API-Key", apiKey());
    request.responseType = "json";
    request.upload.onprogress = (event) => {
      if (!event.lengthComputable) return;
      $("upload-bar").value = event.loaded / event.total;
      $("status").textContent = "Uploading: " + Math.round((100 * event.loaded) / event.total) + "% (" +
        megabytes(event.loaded) + " of " + megabytes(event.total) + ")";
    };
    request.onload = () => {
      if (request.status === 202) resolve(request.response);
      else reject(new ApiError(request.status, request.response));
    };
    request.onerror = () => reject(new Error("the upload was interrupted"));
    const form = new FormData();
    form.append("file", file);
    request.send(form);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls every 1.5 s: with the default rate limit (60 requests a minute per key) that leaves room for the
// images and the job list; a 429 while polling only means "wait", never that the job failed.
const POLL_MS = 1500;

async function follow(statusUrl) {
  for (;;) {
    let status;
    try {
      status = await api(statusUrl);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 429) throw err;
      $("status").textContent = "Rate limited; checking again in " + (err.retryAfter || 5) + " s";
      await sleep((err.retryAfter || 5) * 1000);
      continue;
    }
    $("analysis-bar").value = status.progress;
    let text = STATE_WORDS[status.state] + ": " + Math.round(status.progress * 100) + "%";
    if (status.retry_reason && status.next_attempt_at) {
      const when = new Date(status.next_attempt_at).toLocaleTimeString();
      text = "The analysis service is unavailable (" + status.retry_reason.code + "); trying again at " + when;
    }
    $("status").textContent = text;
    if (status.state === "failed") throw new ApiError(422, { error: status.error });
    if (status.state === "succeeded") return status;
    await sleep(POLL_MS);
  }
}

function setBusy(value) {
  busy = value;
  $("analyse").disabled = value;
  $("analyse").textContent = value ? "Analysing..." : "Analyse";
}

async function submit(event) {
  event.preventDefault();
  if (busy) return; // a double click submits once
  const file = $("file").files[0];
  if (!file || !apiKey()) {
    showError(!apiKey() ? "Enter your API key first." : "Choose a video file first.");
    return;
  }
  localStorage.setItem("deepfake-key", apiKey());
  clearError();
  setBusy(true);
  $("result").hidden = true;
  $("progress").hidden = false;
  $("upload-bar").value = 0;
  $("analysis-bar").value = 0;
  try {
    const job = await upload(file);
    $("upload-bar").value = 1;
    refreshJobs();
    await follow(job.status_url);
    await showJob(job.id, file);
  } catch (err) {
    showError(describe(err));
  } finally {
    setBusy(false);
    $("progress").hidden = true;
    refreshJobs();
  }
}

async function showJob(jobId, file = null) {
  const result = await api("/v1/jobs/" + jobId + "/result");
  shownJob = jobId;
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls = [];
  renderResult(result, jobId, file);
}

function thresholdSentence(result) {
  let text = "The score is the model's calibrated probability that a face was manipulated; a video is called " +
    "fake when its most suspicious deciding face scores " + result.threshold.toFixed(2) + " or more.";
  const model = result.model;
  if (model.reals_called_fake != null && model.fakes_caught != null) {
    text += " At this threshold, on videos from sources it was not trained on, the model called " +
      Math.round(model.reals_called_fake * 100) + "% of real videos fake and caught " +
      Math.round(model.fakes_caught * 100) + "% of fakes.";
  }
  return text;
}

// Why a face has no lip-sync score, in words (tracks[].audio_visual.reason; README "Audio-visual signal").
const AV_REASONS = {
  no_audio: "the video has no audio", no_speech: "no speech while this face is seen",
  too_few_windows: "too little speech while this face is seen", audio_error: "the audio could not be decoded",
  uncalibrated: "the sync model has no score rule", disabled: "the audio signal is off",
};

function audioVisualText(av) {
  if (!av) return "Lips against the voice: not analysed";
  if (av.score == null) return "Lips against the voice: no score (" + (AV_REASONS[av.reason] || av.reason) + ")";
  return "Lips against the voice: " + Math.round(av.score * 100) + "% out of sync (best audio offset " +
    av.offset_s.toFixed(2) + " s, " + av.windows_scored + " windows)";
}

function signalsSentence(result) {
  const signals = result.signals;
  if (!signals || signals.visual == null) return "";
  const visual = "Visual model: " + Math.round(signals.visual * 100) + "%";
  if (signals.audio_visual == null) return visual + "; no lip-sync score, so the score is the visual one.";
  // Unfused (the service default, DEEPFAKE_FUSE_AUDIO_VISUAL): the video's score is its visual signal.
  const fused = result.score != null && Math.abs(result.score - signals.visual) > 1e-4;
  return visual + "; lips against the voice: " + Math.round(signals.audio_visual * 100) +
    "% out of sync; " + (fused ? "the score fuses both." : "shown beside it, not fused into the score.");
}

function renderResult(result, jobId, file) {
  const verdict = $("verdict");
  verdict.className = "verdict " + result.verdict;
  verdict.textContent = VERDICT_WORDS[result.verdict] + " — " + (result.path || "video");
  $("confidence").textContent = result.score == null
    ? "No score: the video cannot be judged."
    : "Calibrated probability of manipulation: " + Math.round(result.score * 100) + "% (score " +
      result.score.toFixed(2) + ", threshold " + result.threshold.toFixed(2) + ")";
  $("threshold").textContent = thresholdSentence(result);
  $("signals").textContent = signalsSentence(result);
  const list = $("warning-list");
  list.replaceChildren(...result.warnings.map((w) => element("li", {}, w)));
  $("warnings").hidden = result.warnings.length === 0;
  const player = $("player");
  if (file) {
    const url = URL.createObjectURL(file);
    objectUrls.push(url);
    player.src = url;
    player.hidden = false;
  } else {
    player.removeAttribute("src");
    player.hidden = true;
  }
  $("result").hidden = false; // visible first: the timeline takes its width from its box
  shownResult = result;
  renderTimeline(result);
  renderFaces(result);
  $("report-link").dataset.job = jobId;
  verdict.focus();
}

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text != null) node.textContent = text;
  return node;
}

function seek(t) {
  const player = $("player");
  if (player.hidden) return;
  player.currentTime = t;
  player.pause();
}

function svgElement(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function renderTimeline(result) {
  // The chart is drawn at its box's width (320..800 px), so its labels stay readable on a phone.
  const width = Math.round(Math.max(320, Math.min(800, $("timeline").clientWidth || 800)));
  const height = 180, pad = 30;
  const span = Math.max(result.video.duration_s, ...result.timeline.map((p) => p.t), 1e-6);
  const x = (t) => pad + ((width - 2 * pad) * t) / span;
  const y = (s) => height - pad - (height - 2 * pad) * s;
  const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, role: "group",
    "aria-label": "Most suspicious face score over time" });
  svg.append(svgElement("rect", { x: pad, y: pad, width: width - 2 * pad, height: height - 2 * pad, fill: "#f6f6f6" }));
  const threshold = svgElement("line", { x1: pad, x2: width - pad, y1: y(result.threshold), y2: y(result.threshold),
    stroke: "#b00", "stroke-dasharray": "5,4" });
  svg.append(threshold);
  const label = (tx, ty, text, anchor = "start", fill = "#333") => {
    const node = svgElement("text", { x: tx, y: ty, "font-size": 11, "text-anchor": anchor, fill });
    node.textContent = text;
    svg.append(node);
  };
  label(width - pad, y(result.threshold) - 4, "threshold " + result.threshold.toFixed(2), "end", "#b00");
  label(pad, height - 10, "0 s");
  label(width - pad, height - 10, span.toFixed(1) + " s", "end");
  label(6, y(1) + 4, "1");
  label(6, y(0) + 4, "0");
  let segment = [];
  const flush = () => {
    if (segment.length) svg.append(svgElement("polyline", { points: segment.join(" "), fill: "none", stroke: "var(--line)", "stroke-width": 2 }));
    segment = [];
  };
  for (const point of result.timeline) {
    if (point.score == null) { flush(); continue; }
    segment.push(x(point.t).toFixed(1) + "," + y(point.score).toFixed(1));
  }
  flush();
  for (const point of result.timeline) {
    if (point.score == null) continue;
    const dot = svgElement("circle", { cx: x(point.t), cy: y(point.score), r: 4, fill: "var(--line)", tabindex: 0,
      role: "button", "aria-label": `At ${point.t.toFixed(2)} s: score ${point.score.toFixed(2)}` });
    const title = svgElement("title", {});
    title.textContent = `${point.t.toFixed(2)} s: ${point.score.toFixed(2)}`;
    dot.append(title);
    dot.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); seek(point.t); }
    });
    svg.append(dot);
  }
  // A click anywhere on the chart seeks to that moment.
  svg.addEventListener("click", (event) => {
    const box = svg.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * width;
    seek(Math.min(span, Math.max(0, ((px - pad) / (width - 2 * pad)) * span)));
  });
  $("timeline").replaceChildren(svg);
}

function renderFaces(result) {
  const container = $("faces");
  container.replaceChildren();
  if (result.tracks.length === 0) {
    container.append(element("p", {}, "No face was tracked in the sampled frames."));
    return;
  }
  // The face whose score is the video's (deepfake/report.py deciding_track says the same).
  const deciding = result.tracks.find((t) => t.used_for_verdict && t.score != null && t.score === result.score);
  for (const track of result.tracks) {
    const card = element("article", { class: "face-card", "data-testid": "face-card" });
    card.append(element("h4", {}, "Face " + track.id));
    const evidence = track.evidence;
    const image = element("img", { class: "face", alt: "Face " + track.id + " at its most suspicious frame" });
    if (evidence) {
      card.append(image);
      blobUrl(evidence.thumbnail).then((url) => { image.src = url; }).catch(() => { image.alt = "image unavailable"; });
    }
    const score = track.score == null ? "no score" : track.score.toFixed(2);
    card.append(element("p", { class: "score" }, "Score " + score + " (" + track.verdict + ")"));
    card.append(element("p", { "data-testid": "audio-visual" }, audioVisualText(track.audio_visual)));
    card.append(element("p", {}, "Seen from " + track.start_s.toFixed(2) + " s to " + track.end_s.toFixed(2) + " s"));
    let role = "Not counted: too small or seen too briefly";
    if (deciding && track.id === deciding.id) role = "Decided the verdict: the most suspicious face that counts";
    else if (track.used_for_verdict) role = "Counted, but another face scored higher";
    card.append(element("p", { "data-testid": "decided" }, role));
    const actions = element("div", { class: "actions" });
    if (evidence && evidence.heatmap) {
      const toggle = element("button", { type: "button", "aria-pressed": "false", "data-testid": "heatmap-toggle" }, "Show heatmap");
      let heatUrl = null, thumbUrl = null;
      toggle.addEventListener("click", async () => {
        const on = toggle.getAttribute("aria-pressed") !== "true";
        try {
          thumbUrl = thumbUrl || image.src;
          heatUrl = heatUrl || (await blobUrl(evidence.heatmap));
          image.src = on ? heatUrl : thumbUrl;
          toggle.setAttribute("aria-pressed", String(on));
          toggle.textContent = on ? "Show face" : "Show heatmap";
        } catch (err) { showError(describe(err)); }
      });
      actions.append(toggle);
    }
    if (evidence) {
      const jump = element("button", { type: "button" }, "Jump to " + evidence.frame_t.toFixed(2) + " s");
      jump.addEventListener("click", () => seek(evidence.frame_t));
      actions.append(jump);
    }
    card.append(actions);
    if (evidence) {
      const strip = element("img", { class: "strip", alt: "Sampled frames of face " + track.id + " with its box" });
      blobUrl(evidence.strip).then((url) => { strip.src = url; }).catch(() => { strip.alt = "image unavailable"; });
      const wrap = element("div", { class: "strip-wrap", tabindex: 0, "aria-label": "Sampled frames, scrollable" });
      wrap.append(strip);
      card.append(wrap);
      const times = evidence.strip_times.map((t) => t.toFixed(2)).join(", ");
      card.append(element("p", { class: "small" }, "Frames at " + times + " s; the box marks this face."));
    }
    container.append(card);
  }
}

async function downloadReport(event) {
  event.preventDefault();
  const jobId = event.currentTarget.dataset.job;
  try {
    const html = await api("/v1/jobs/" + jobId + "/report");
    const url = URL.createObjectURL(new Blob([html], { type: "text/html" }));
    const link = element("a", { href: url, download: "deepfake-report-" + jobId + ".html" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    showError(describe(err));
  }
}

async function refreshJobs() {
  if (!apiKey()) return;
  let jobs;
  try {
    jobs = await api("/v1/jobs?limit=10");
  } catch (err) {
    showError(describe(err));
    return;
  }
  const list = $("jobs");
  list.replaceChildren();
  if (jobs.length === 0) list.append(element("li", {}, "No jobs yet."));
  for (const job of jobs) {
    const item = element("li", { "data-testid": "job" });
    const created = new Date(job.created_at).toLocaleString();
    let text = (job.filename || job.id) + " — " + STATE_WORDS[job.state] + ", " + created;
    if (job.state === "failed" && job.error) text += ": " + job.error.message;
    item.append(element("span", { class: "name" }, text));
    if (job.state === "succeeded") {
      const open = element("button", { type: "button" }, "Open");
      open.addEventListener("click", () => { clearError(); showJob(job.id).catch((err) => showError(describe(err))); });
      item.append(open);
    }
    const remove = element("button", { type: "button", "data-testid": "delete-job" }, "Delete");
    remove.setAttribute("aria-label", "Delete job " + (job.filename || job.id));
    remove.addEventListener("click", async () => {
      try {
        await api("/v1/jobs/" + job.id, { method: "DELETE" });
        if (shownJob === job.id) $("result").hidden = true;
        refreshJobs();
      } catch (err) { showError(describe(err)); }
    });
    item.append(remove);
    list.append(item);
  }
}

// Two tabs (ARIA tab pattern): the selected one is the only one in the Tab order, arrow keys move between.
const TABS = { "tab-file": "file-panel", "tab-live": "live-panel" };

function selectTab(tabId) {
  for (const [id, panel] of Object.entries(TABS)) {
    const selected = id === tabId;
    $(id).setAttribute("aria-selected", String(selected));
    $(id).tabIndex = selected ? 0 : -1;
    $(panel).hidden = !selected;
  }
  clearError(); // an error belongs to the tab it came from
  document.dispatchEvent(new CustomEvent("tabchange", { detail: tabId })); // live.js stops a hidden stream
}

function setUpTabs() {
  const ids = Object.keys(TABS);
  for (const id of ids) {
    $(id).addEventListener("click", () => selectTab(id));
    $(id).addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const next = ids[(ids.indexOf(id) + (event.key === "ArrowRight" ? 1 : ids.length - 1)) % ids.length];
      selectTab(next);
      $(next).focus();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpTabs();
  $("key").value = localStorage.getItem("deepfake-key") || "";
  $("form").addEventListener("submit", submit);
  $("report-link").addEventListener("click", downloadReport);
  $("refresh-jobs").addEventListener("click", refreshJobs);
  $("key").addEventListener("change", refreshJobs);
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (shownResult && !$("result").hidden) renderTimeline(shownResult); }, 150);
  });
  refreshJobs();
});
