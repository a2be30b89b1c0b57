"""A minimal web page at `/`: pick a video, enter the API key, see the verdict (uses POST /v1/jobs).

WHY jobs and not the synchronous endpoint: the page can show progress and handle long videos with the
same code path a frontend app would use.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["web"])

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Deepfake video detector</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
 .verdict{font-size:2rem;font-weight:700} .fake{color:#b00} .real{color:#070} .inconclusive{color:#777}
 pre{background:#f4f4f4;padding:1rem;overflow:auto;max-height:24rem} progress{width:100%}
</style></head><body>
<h1>Deepfake video detector</h1>
<p>Upload a video; faces are tracked and scored. API docs: <a href="/docs">/docs</a>.</p>
<form id="form">
 <p><label>API key <input id="key" type="password" autocomplete="off"></label></p>
 <p><input id="file" type="file" accept="video/*" required></p>
 <p><button>Analyse</button></p>
</form>
<progress id="bar" max="1" value="0" hidden></progress>
<p id="status"></p><p id="verdict" class="verdict"></p><pre id="out" hidden></pre>
<script>
const $ = (id) => document.getElementById(id);
$("key").value = localStorage.getItem("deepfake-key") || "";
async function call(url, opts = {}) {
  const headers = {"X-API-Key": $("key").value};
  const res = await fetch(url, {...opts, headers});
  const body = await res.json();
  if (!res.ok && res.status !== 409) throw new Error(body.error ? body.error.message : res.statusText);
  return [res.status, body];
}
$("form").onsubmit = async (event) => {
  event.preventDefault();
  localStorage.setItem("deepfake-key", $("key").value);
  const data = new FormData(); data.append("file", $("file").files[0]);
  $("verdict").textContent = ""; $("out").hidden = true; $("bar").hidden = false; $("bar").value = 0;
  try {
    const [, job] = await call("/v1/jobs", {method: "POST", body: data});
    for (;;) {
      const [, st] = await call(job.status_url);
      $("bar").value = st.progress; $("status").textContent = "Job " + st.id + ": " + st.state;
      if (st.state === "failed") throw new Error(st.error.message);
      if (st.state === "succeeded") break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const [, result] = await call(job.result_url);
    const score = result.score === null ? "no score" : "score " + result.score.toFixed(3);
    $("verdict").textContent = result.verdict + " (" + score + ")";
    $("verdict").className = "verdict " + result.verdict;
    $("out").textContent = JSON.stringify(result, null, 2); $("out").hidden = false;
  } catch (err) { $("status").textContent = "Error: " + err.message; }
  $("bar").hidden = true;
};
</script></body></html>
"""


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(PAGE)
