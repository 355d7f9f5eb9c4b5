// The search page: plain browser JavaScript, no build step. It talks to the same JSON API as any
// other client (POST /search, GET /videos/{id}/similar) and renders what comes back.
"use strict";

const $ = (sel) => document.querySelector(sel);
const form = $("#search-form");
const queryInput = $("#query");
const imageInput = $("#image-input");
const resultsEl = $("#results");
const statusEl = $("#status");
const errorEl = $("#error");
const dropZone = $("#drop-zone");
const player = $("#player");
const playerVideo = $("#player-video");
const playerImage = $("#player-image");

// The picked image, as the base64 string the API takes; null when searching by text.
let queryImage = null;
// Bumped per request so a slow earlier answer cannot overwrite a later one.
let generation = 0;

const apiKeyInput = $("#api-key");
apiKeyInput.value = sessionStorage.getItem("mediasearch.apiKey") || "";
apiKeyInput.addEventListener("change", () => {
  sessionStorage.setItem("mediasearch.apiKey", apiKeyInput.value);
});

function headers(extra = {}) {
  const key = apiKeyInput.value.trim();
  return key ? { ...extra, "x-api-key": key } : extra;
}

// ---- talking to the API ------------------------------------------------------------------------

class ApiProblem extends Error {
  constructor(message, lines = [], field = null) {
    super(message);
    this.lines = lines;
    this.field = field;
  }
}

// The API's errors are {error, detail}; detail names the field at fault in one of a few shapes.
function describeDetail(detail) {
  if (detail == null) return [];
  if (Array.isArray(detail)) {
    return detail.map((d) => (d && d.field ? `${d.field}: ${d.message || ""}` : JSON.stringify(d)));
  }
  if (typeof detail === "object") {
    const lines = [];
    if (detail.reason) lines.push(detail.reason);
    if (detail.field) lines.push(`field: ${detail.field}`);
    if (detail.limit_bytes) lines.push(`limit: ${formatBytes(detail.limit_bytes)}`);
    if (detail.request_id) lines.push(`request id: ${detail.request_id}`);
    return lines;
  }
  return [String(detail)];
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  } catch (err) {
    throw new ApiProblem("Cannot reach the server. Is `mediasearch serve` running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    // A proxy's HTML error page, say: say what happened rather than failing to parse it.
  }
  if (!response.ok) {
    if (body && body.error) {
      const field = body.detail && !Array.isArray(body.detail) ? body.detail.field : null;
      throw new ApiProblem(body.error, describeDetail(body.detail), field);
    }
    throw new ApiProblem(`The server answered ${response.status} ${response.statusText}.`);
  }
  if (body == null) throw new ApiProblem("The server sent a response that is not JSON.");
  return body;
}

// ---- the form ----------------------------------------------------------------------------------

function selectedKinds() {
  return [...form.querySelectorAll('input[name="kinds"]:checked')].map((el) => el.value);
}

function selectedMode() {
  return form.querySelector('input[name="mode"]:checked').value;
}

function resultCount() {
  const k = Number.parseInt($("#k").value, 10);
  return Number.isFinite(k) ? Math.min(100, Math.max(1, k)) : 24;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});

// Typing means a text search again: one query at a time, as the API wants.
queryInput.addEventListener("input", () => {
  if (queryImage !== null && queryInput.value !== "") clearImage();
});

for (const el of form.querySelectorAll('input[name="kinds"], input[name="mode"]')) {
  el.addEventListener("change", () => {
    if (queryImage !== null || queryInput.value.trim() !== "") search();
  });
}

async function search() {
  const kinds = selectedKinds();
  const text = queryInput.value.trim();
  if (queryImage === null && text === "") {
    return showError("Type something to search for, or pick an image.");
  }
  if (kinds.length === 0) {
    return showError("Choose images, videos or both.");
  }
  const payload = { kinds, mode: selectedMode(), k: resultCount() };
  if ($("#cutoff-auto").checked) payload.cutoff = "auto";
  const filters = photoFilters();
  if (filters === null) return;
  if (Object.keys(filters).length) payload.filters = filters;
  let what;
  if (queryImage !== null) {
    payload.image = queryImage.base64;
    what = `images like ${queryImage.name}`;
  } else {
    payload.text = text;
    what = `“${text}”`;
    rememberQuery(text);
  }
  const extra = partRows();
  if (extra.problem) return showError(extra.problem);
  if (extra.parts.length) {
    // A composed query: the main query is the first part, at weight 1 (the API takes one or the other).
    const main = payload.image !== undefined ? { image: payload.image } : { text: payload.text };
    delete payload.image;
    delete payload.text;
    payload.parts = [{ ...main, weight: 1 }, ...extra.parts];
    what += extra.parts.map((p) => ` ${p.weight < 0 ? "−" : "+"} ${p.label}`).join("");
    payload.parts.forEach((p) => delete p.label);
  }
  await run(what, () =>
    api("/search", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(payload),
    }),
  );
}

async function moreLikeThis(result) {
  const name = displayName(result);
  queryInput.value = "";
  // The button is usually far down the grid: bring the new answer into view.
  await run(`videos like ${name}`, () =>
    api(`/videos/${encodeURIComponent(result.id)}/similar?k=${resultCount()}`),
    { scroll: true },
  );
}

async function run(what, call, { scroll = false } = {}) {
  const mine = ++generation;
  hideError();
  statusEl.textContent = `Searching for ${what}…`;
  form.setAttribute("aria-busy", "true");
  try {
    const body = await call();
    if (mine !== generation) return;
    render(body.results, what, body.took_ms);
    // Where and why a cutoff ended the list (the response's `cutoff`), said beside the count.
    if (body.cutoff && body.cutoff.dropped > 0) statusEl.textContent += ` (cut after ${body.cutoff.kept}: ${body.cutoff.reason})`;
  } catch (err) {
    if (mine !== generation) return;
    resultsEl.replaceChildren();
    statusEl.textContent = "";
    showError(err.message, [...(err.lines || []), ...hintFor(err)]);
  } finally {
    // After the next layout, so the browser is not still clamping the scroll to the old grid's height.
    if (scroll && mine === generation) requestAnimationFrame(() => statusEl.scrollIntoView({ behavior: "smooth", block: "start" }));
    if (mine === generation) form.removeAttribute("aria-busy");
  }
}

// What to do next, where the page knows better than the message.
function hintFor(err) {
  if (err.field === "mode" && selectedMode() === "caption") {
    return ["Switch the mode to clip or hybrid to search now."];
  }
  return [];
}

function rememberQuery(text) {
  // The query in the address bar makes a search linkable and survives a reload.
  const url = new URL(window.location.href);
  url.searchParams.set("q", text);
  window.history.replaceState(null, "", url);
}

// ---- composed queries: extra parts, each text or an image, with a weight --------------------------

$("#add-plus").addEventListener("click", () => addPart(1));
$("#add-minus").addEventListener("click", () => addPart(-0.5));

function addPart(weight) {
  const row = el("div", { class: "part-row" });
  const kind = el("select", { class: "part-kind", "aria-label": "Part kind" });
  kind.append(el("option", { value: "text" }, "text"), el("option", { value: "image" }, "image"));
  const text = el("input", { class: "part-text", type: "text", maxlength: "1000", placeholder: weight < 0 ? "what to avoid, e.g. people" : "also this", "aria-label": "Part text" });
  const file = el("input", { class: "part-file", type: "file", accept: "image/*", hidden: "", "aria-label": "Part image" });
  const w = el("input", { class: "part-weight", type: "number", min: "-1", max: "1", step: "0.1", value: String(weight), "aria-label": "Part weight", title: "weight in [−1, 1]: negative pushes results away" });
  const remove = el("button", { type: "button", class: "link part-remove", "aria-label": "Remove this part" }, "✕");
  kind.addEventListener("change", () => {
    text.hidden = kind.value !== "text";
    file.hidden = kind.value !== "image";
  });
  file.addEventListener("change", () => {
    row.dataset.image = "";
    const picked = file.files[0];
    if (!picked) return;
    const reader = new FileReader();
    reader.onload = () => {
      const dataUrl = String(reader.result);
      row.dataset.image = dataUrl.slice(dataUrl.indexOf(",") + 1);
      row.dataset.name = picked.name;
    };
    reader.readAsDataURL(picked);
  });
  remove.addEventListener("click", () => row.remove());
  row.append(kind, text, file, w, remove);
  $("#part-rows").append(row);
  text.focus();
}

// The extra parts as the API takes them (with a label for the status line), or the first problem.
function partRows() {
  const parts = [];
  for (const [i, row] of [...document.querySelectorAll("#part-rows .part-row")].entries()) {
    const weight = Number.parseFloat(row.querySelector(".part-weight").value);
    if (!Number.isFinite(weight) || weight < -1 || weight > 1 || weight === 0) {
      return { parts, problem: `Part ${i + 1}: the weight must be between −1 and 1, and not 0.` };
    }
    if (row.querySelector(".part-kind").value === "image") {
      if (!row.dataset.image) return { parts, problem: `Part ${i + 1}: pick an image.` };
      parts.push({ image: row.dataset.image, weight, label: row.dataset.name || "an image" });
    } else {
      const text = row.querySelector(".part-text").value.trim();
      if (!text) return { parts, problem: `Part ${i + 1}: type some words, or remove the part.` };
      parts.push({ text, weight, label: `“${text}”` });
    }
  }
  return { parts, problem: null };
}

// ---- images: pick, drop or paste ---------------------------------------------------------------

imageInput.addEventListener("change", () => {
  if (imageInput.files.length) useImageFile(imageInput.files[0]);
});

$("#image-clear").addEventListener("click", () => {
  clearImage();
  queryInput.focus();
});

let dragDepth = 0;
document.addEventListener("dragenter", (event) => {
  if (!hasFiles(event)) return;
  dragDepth += 1;
  dropZone.classList.add("dragging");
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) dropZone.classList.remove("dragging");
});
document.addEventListener("dragover", (event) => {
  if (hasFiles(event)) event.preventDefault(); // without this the browser opens the file
});
document.addEventListener("drop", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  dropZone.classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (file) useImageFile(file);
});
document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) {
    event.preventDefault();
    useImageFile(file);
  }
});

function hasFiles(event) {
  return event.dataTransfer && [...event.dataTransfer.types].includes("Files");
}

function useImageFile(file) {
  // The server decides what is an image (and says why not); only refuse what is obviously not one.
  if (file.type && !file.type.startsWith("image/")) {
    return showError(`${file.name} is not an image (${file.type}).`);
  }
  const reader = new FileReader();
  reader.onerror = () => showError(`Cannot read ${file.name}.`);
  reader.onload = () => {
    const dataUrl = String(reader.result);
    queryImage = { name: file.name, base64: dataUrl.slice(dataUrl.indexOf(",") + 1) };
    $("#image-preview").src = dataUrl;
    $("#image-name").textContent = file.name;
    $("#image-chip").hidden = false;
    queryInput.value = "";
    search();
  };
  reader.readAsDataURL(file);
}

function clearImage() {
  queryImage = null;
  imageInput.value = "";
  $("#image-chip").hidden = true;
  $("#image-preview").removeAttribute("src");
}

// ---- results -----------------------------------------------------------------------------------

function render(results, what, tookMs) {
  resultsEl.replaceChildren();
  // Video cards are twice as wide as image cards; a grid of videos alone gets columns of their width,
  // so no column is left empty at the end of each row.
  resultsEl.classList.toggle("videos-only", results.length > 0 && results.every((r) => r.kind === "video"));
  if (!results.length) {
    statusEl.textContent = "";
    const empty = el("div", { class: "empty" });
    empty.append(
      el("strong", {}, `No results for ${what}.`),
      el("p", {}, "Try other words, another mode, or show both images and videos."),
    );
    resultsEl.append(empty);
    return;
  }
  const took = typeof tookMs === "number" ? ` in ${tookMs.toFixed(0)} ms` : "";
  statusEl.textContent = `${results.length} result${results.length === 1 ? "" : "s"} for ${what}${took}`;
  for (const result of results) resultsEl.append(card(result));
}

function card(result) {
  const isVideo = result.kind === "video";
  const article = el("article", { class: `card ${result.kind}`, "data-id": result.id, "data-kind": result.kind });

  const thumb = el("button", { type: "button", class: "thumb", title: isVideo ? "Play" : "Open" });
  const img = el("img", { alt: result.caption || displayName(result), loading: "lazy" });
  setMedia(img, result.thumbnail_url || result.url);
  thumb.append(img);
  if (isVideo) {
    const badge = result.duration ? formatTime(result.duration) : "video";
    thumb.append(el("span", { class: "badge" }, `▶ ${badge}`));
  }
  thumb.addEventListener("click", () => {
    const best = (result.scenes || [])[0];
    openPlayer(result, best ? best.t_start : 0);
  });
  article.append(thumb);

  const meta = el("div", { class: "meta" });
  const score = el("span", { class: "score", title: result.explanation || "" }, result.score.toFixed(3));
  meta.append(score, el("span", { class: "kind" }, result.kind));
  article.append(meta);
  article.append(el("div", { class: "name", title: result.uri }, displayName(result)));
  if (result.contributions) {
    // A composed query: what each part added to the score (they add up to it).
    const list = el("ul", { class: "contributions", "aria-label": "Each part's contribution", title: result.explanation || "" });
    for (const c of result.contributions) {
      const label = c.kind === "image" ? "image" : `“${c.label}”`;
      const sign = c.contribution < 0 ? "−" : "+";
      list.append(el("li", { class: c.weight < 0 ? "minus" : "plus" }, `${c.weight > 0 ? "+" : ""}${c.weight} × ${label}: ${sign}${Math.abs(c.contribution).toFixed(3)}`));
    }
    article.append(list);
  }
  if (result.caption) article.append(el("p", { class: "caption" }, result.caption));
  const photo = photoLine(result);
  if (photo) article.append(el("p", { class: "photo-meta muted" }, photo));
  if (isVideo && result.strip_url) {
    // Every scene of the video side by side: what it holds besides the scenes that matched.
    const scenes = result.scene_count ? `all ${result.scene_count} scenes` : "all scenes";
    const strip = el("img", { class: "strip", alt: `${scenes} of ${displayName(result)}`, title: scenes, loading: "lazy" });
    setMedia(strip, result.strip_url);
    article.append(strip);
  }

  if (isVideo && result.scenes && result.scenes.length) {
    const list = el("ol", { class: "scenes", "aria-label": "Matching scenes" });
    for (const scene of result.scenes) {
      const b = el("button", {
        type: "button",
        class: "scene",
        "data-t": String(scene.t_start),
        title: `Play from ${formatTime(scene.t_start)} (scene ${scene.scene}, score ${scene.score.toFixed(3)})`,
      });
      if (scene.thumbnail_url) {
        const simg = el("img", { alt: `scene ${scene.scene}`, loading: "lazy" });
        setMedia(simg, scene.thumbnail_url);
        b.append(simg);
      }
      b.append(
        el("span", { class: "ts" }, `${formatTime(scene.t_start)}–${formatTime(scene.t_end)}`),
        el("span", { class: "scene-score" }, scene.score.toFixed(3)),
      );
      b.addEventListener("click", () => openPlayer(result, scene.t_start));
      list.append(el("li", {}, b));
    }
    article.append(list);
  }
  if (isVideo) {
    const more = el("button", { type: "button", class: "button secondary more-like-this" }, "More like this");
    more.addEventListener("click", () => moreLikeThis(result));
    article.append(more);
  }
  return article;
}

// ---- the player --------------------------------------------------------------------------------

async function openPlayer(result, tStart) {
  $("#player-title").textContent = displayName(result);
  const note = $("#player-note");
  note.textContent = result.explanation || "";
  const url = result.url;
  // Animated GIFs count as videos in the index, but a <video> element cannot play them.
  const isGif = /\.gif$/i.test(result.uri);
  if (result.kind !== "video" || isGif) {
    playerVideo.pause();
    playerVideo.hidden = true;
    playerImage.hidden = false;
    setMedia(playerImage, url);
  } else {
    playerImage.hidden = true;
    playerVideo.hidden = false;
    const src = await mediaUrl(url);
    // The media fragment starts playback at the scene; the explicit seek covers players that
    // ignore fragments on blob URLs.
    playerVideo.src = `${src}#t=${tStart.toFixed(2)}`;
    playerVideo.dataset.start = String(tStart);
    playerVideo.addEventListener(
      "loadedmetadata",
      () => {
        if (Math.abs(playerVideo.currentTime - tStart) > 0.25) playerVideo.currentTime = tStart;
        playerVideo.play().catch(() => {
          note.textContent = `Press play to start at ${formatTime(tStart)}.`;
        });
      },
      { once: true },
    );
    playerVideo.addEventListener(
      "error",
      () => {
        note.textContent = "This browser cannot play this video format; the scene thumbnails show what matched.";
      },
      { once: true },
    );
  }
  if (!player.open) player.showModal();
}

$("#player-close").addEventListener("click", () => player.close());
player.addEventListener("click", (event) => {
  if (event.target === player) player.close(); // a click on the backdrop
});
player.addEventListener("close", () => {
  playerVideo.pause();
  playerVideo.removeAttribute("src");
  playerVideo.load();
});

// ---- photo filters (EXIF: taken-at, camera, GPS box) ---------------------------------------------

// The filters the form holds, as the API's `filters`; null (after saying why) when half a box is given.
function photoFilters() {
  const filters = {};
  const after = $("#taken-after").value;
  const before = $("#taken-before").value;
  const camera = $("#camera").value.trim();
  if (after) filters.taken_after = after;
  if (before) filters.taken_before = before;
  if (camera) filters.camera = camera;
  const box = ["#bbox-min-lat", "#bbox-min-lon", "#bbox-max-lat", "#bbox-max-lon"].map((id) => $(id).value.trim());
  const given = box.filter((v) => v !== "").length;
  if (given === 4) {
    filters.bbox = box.map(Number);
  } else if (given > 0) {
    showError("Give all four corners of the place box (min lat, min lon, max lat, max lon), or none.");
    return null;
  }
  const open = Object.keys(filters).length > 0;
  $("#photo-filters").classList.toggle("active", open);
  return filters;
}

// What a photo's EXIF said: when (UTC, as stored), with what, where.
function photoLine(result) {
  const parts = [];
  if (result.taken_at) parts.push(result.taken_at.slice(0, 16).replace("T", " "));
  if (result.camera) parts.push(result.camera);
  if (result.gps_lat != null && result.gps_lon != null) {
    parts.push(`${result.gps_lat.toFixed(4)}, ${result.gps_lon.toFixed(4)}`);
  }
  return parts.join(" · ");
}

// ---- duplicates ----------------------------------------------------------------------------------

$("#duplicates-form").addEventListener("submit", (event) => {
  event.preventDefault();
  findDuplicates();
});

async function findDuplicates() {
  const kind = $("#dup-kind").value;
  const threshold = $("#dup-threshold").value.trim() || "0.95";
  const dupStatus = $("#dup-status");
  const clustersEl = $("#dup-clusters");
  hideError();
  dupStatus.textContent = "Looking for duplicates…";
  clustersEl.replaceChildren();
  try {
    const params = new URLSearchParams({ kind, threshold });
    const body = await api(`/duplicates?${params}`);
    renderClusters(body);
  } catch (err) {
    dupStatus.textContent = "";
    showError(err.message, err.lines || []);
  }
}

function renderClusters(body) {
  const clustersEl = $("#dup-clusters");
  const kindName = { image: "images", video: "videos", scene: "scenes" }[body.kind] || body.kind;
  const n = body.clusters.length;
  const more = body.truncated ? " (more not shown)" : "";
  $("#dup-status").textContent =
    `${n} group${n === 1 ? "" : "s"} of near-duplicate ${kindName}${more} at similarity ≥ ${body.threshold} ` +
    `among ${body.documents} ${kindName}, in ${body.took_ms.toFixed(0)} ms`;
  for (const cluster of body.clusters) {
    const article = el("article", { class: "cluster", "data-representative": cluster.representative });
    const range =
      cluster.min_score === cluster.max_score
        ? cluster.max_score.toFixed(3)
        : `${cluster.min_score.toFixed(3)}–${cluster.max_score.toFixed(3)}`;
    article.append(el("h3", {}, `${cluster.size} copies · similarity ${range}`));
    const row = el("div", { class: "members" });
    for (const member of cluster.members) row.append(memberCard(member, member.id === cluster.representative));
    article.append(row);
    clustersEl.append(article);
  }
}

function memberCard(member, representative) {
  const figure = el("figure", { class: `member${representative ? " representative" : ""}`, "data-id": member.id });
  const button = el("button", { type: "button", class: "thumb", title: member.uri });
  const img = el("img", { alt: displayName(member), loading: "lazy" });
  setMedia(img, member.thumbnail_url || (member.kind === "image" ? member.url : null));
  button.append(img);
  // Scenes and videos play in the player, from the scene's start.
  const asResult = { ...member, kind: member.kind === "image" ? "image" : "video", explanation: "" };
  button.addEventListener("click", () => openPlayer(asResult, member.t_start || 0));
  figure.append(button);
  const span = member.t_start != null ? ` · ${formatTime(member.t_start)}–${formatTime(member.t_end)}` : "";
  const score = representative ? "representative" : member.score.toFixed(3);
  figure.append(el("figcaption", {}, el("span", { class: "score" }, score), ` ${displayName(member)}${span}`));
  return figure;
}

// ---- helpers -----------------------------------------------------------------------------------

// With an API key, /media needs the header too, which <img src> cannot send: fetch those as blobs.
// Presigned S3 links (absolute URLs) carry their own signature and are used as they are.
const blobCache = new Map();
async function mediaUrl(url) {
  if (!url) return "";
  if (!apiKeyInput.value.trim() || !url.startsWith("/")) return url;
  if (!blobCache.has(url)) {
    blobCache.set(
      url,
      fetch(url, { headers: headers() }).then((r) => (r.ok ? r.blob() : Promise.reject(r))).then(URL.createObjectURL),
    );
  }
  return blobCache.get(url).catch(() => "");
}

function setMedia(imgEl, url) {
  if (!url) return;
  mediaUrl(url).then((src) => {
    if (src) imgEl.src = src;
  });
}

function displayName(result) {
  const path = result.uri.split(/[?#]/)[0];
  try {
    return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1)) || result.id;
  } catch (err) {
    return path.slice(path.lastIndexOf("/") + 1) || result.id;
  }
}

function formatTime(seconds) {
  const m = Math.floor(seconds / 60);
  const s = seconds - m * 60;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}

function formatBytes(n) {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function showError(message, lines = []) {
  errorEl.replaceChildren(el("strong", {}, message));
  if (lines.length) {
    const list = el("ul");
    for (const line of lines) list.append(el("li", {}, line));
    errorEl.append(list);
  }
  errorEl.hidden = false;
}

function hideError() {
  errorEl.hidden = true;
  errorEl.replaceChildren();
}

// ---- start -------------------------------------------------------------------------------------

api("/health")
  .then((h) => {
    $("#index-info").textContent = `${h.documents} documents indexed · v${h.version}`;
  })
  .catch(() => {
    $("#index-info").textContent = "server not reachable";
  });

const initial = new URLSearchParams(window.location.search).get("q");
if (initial) {
  queryInput.value = initial;
  search();
} else {
  queryInput.focus();
}
