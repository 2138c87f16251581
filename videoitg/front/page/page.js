// The page of `videoitg serve` (docs/page.md): a client of the server's public API like any other. It sends the
// KServe v2 inference request of the public model (the video's bytes as binary data, or its path under a media
// root), and, where the server has a video-LLM behind it, a streamed chat request to its answer endpoint; it shows
// what comes back. Every text from the person or the server is set as text (textContent, text nodes), never as
// markup. The request options come from the server (the JSON blocks in index.html), not from this file.
"use strict";

(() => {
  const byId = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const OPTIONS = JSON.parse(byId("videoitg-options").textContent);
  const SETUP = JSON.parse(byId("videoitg-setup").textContent);

  const ui = {
    form: byId("ask"), file: byId("video-file"), path: byId("video-path"), sourceFile: byId("source-file"),
    sourceServer: byId("source-server"), roots: byId("roots"), instruction: byId("instruction"),
    options: byId("options"), score: byId("score"), askLlm: byId("ask-llm"), answerControls: byId("answer-controls"),
    model: byId("answer-model"), models: byId("answer-models"), maxTokens: byId("max-tokens"),
    status: byId("status"), error: byId("error"), player: byId("player"), playerNote: byId("player-note"),
    result: byId("result"), asked: byId("asked"), curve: byId("curve"), moments: byId("moments"),
    timing: byId("timing"), thumbs: byId("thumbs"), answer: byId("answer"), answerAsked: byId("answer-asked"),
    answerText: byId("answer-text"), answerFrames: byId("answer-frames"), answerTiming: byId("answer-timing"),
    keyBox: byId("key-box"), apiKey: byId("api-key"),
  };

  const state = {
    served: null, // the public model's inputs and outputs, from its metadata (null: not known, all assumed)
    videoUrl: null, // blob: URL of the local file in the player
    videoKey: null, // which video the player holds
    resultKey: null, // which video the shown result is of
    thumbUrls: [], // blob: URLs of the shown result's frames
    frameImages: new Map(), // frame number -> its blob: URL, for the shown result's video
    ticker: null,
    curveX: null, // time -> x on the curve
    serverRead: false, // what the server offers (its options, its media roots) was read
    reading: false,
  };
  const NOT_READY_RETRY_MS = 1000;

  // An answer the API refused or failed: its own message, and the HTTP status (0: no answer at all; BROKE_OFF: a
  // streamed answer that ended with an error event).
  const BROKE_OFF = -1;
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // ---- elements, as text only ---------------------------------------------------------------------------------
  function make(tag, attrs = {}, text = null) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== null) node.textContent = text;
    return node;
  }

  function makeSvg(tag, attrs = {}, title = null, text = null) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (title !== null) {
      const tip = document.createElementNS(SVG_NS, "title");
      tip.textContent = title;
      node.append(tip);
    }
    if (text !== null) node.append(text);
    return node;
  }

  const num = (x) => (typeof x === "number" ? x : Number.NaN);
  const seconds = (t) => `${num(t).toFixed(2)} s`;
  const counted = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`; // 1 frame, 2 frames
  const score3 = (s) => num(s).toFixed(3);

  function bytesText(n) {
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  // ---- the request options: one field per option the server declares -----------------------------------------
  function renderOptions() {
    for (const o of OPTIONS) {
      const id = `option-${o.option}`;
      const row = make("div", { class: "option" });
      row.append(make("label", { for: id }, o.option));
      let input;
      if (o.choices.length > 0) {
        input = make("select", { id });
        input.append(make("option", { value: "" }, "the server's default"));
        for (const choice of o.choices) input.append(make("option", { value: choice }, choice));
      } else {
        input = make("input", {
          id, type: "number", step: o.kind === "int" ? "1" : "any", min: o.low, max: o.high,
          placeholder: "the server's default", inputmode: o.kind === "int" ? "numeric" : "decimal",
        });
      }
      const range = o.choices.length > 0 ? o.choices.join(", ") : `${o.low} to ${o.high}`;
      row.append(input, make("span", { class: "hint" }, `${o.meaning} (${range}; empty: ${o.default})`));
      ui.options.append(row);
    }
  }

  // The options a person set, each with its value as typed: the API checks them and names what is wrong.
  function chosenOptions() {
    const chosen = [];
    for (const o of OPTIONS) {
      const input = byId(`option-${o.option}`);
      if (input.closest(".option").hidden) continue; // the served model does not take it
      if (input.validity.badInput) throw new Error(`${o.option}: type a number, or nothing for the server's default.`);
      if (input.value === "") continue;
      chosen.push({ o, value: o.choices.length > 0 ? input.value : Number(input.value) });
    }
    return chosen;
  }

  // ---- the video --------------------------------------------------------------------------------------------------
  const fileKey = (file) => `file:${file.name}:${file.size}:${file.lastModified}`;

  function chosenVideo() {
    if (ui.sourceServer.checked) {
      const path = ui.path.value.trim();
      if (path === "") throw new Error("Name the video's path on the server, or choose a file on this computer.");
      return { path, key: `server:${path}` };
    }
    const file = ui.file.files[0];
    if (!file) throw new Error("Choose a video file (or name a file on the server).");
    return { file, key: fileKey(file) };
  }

  function loadPlayer() {
    if (state.videoUrl !== null) URL.revokeObjectURL(state.videoUrl);
    state.videoUrl = null;
    state.videoKey = null;
    ui.player.removeAttribute("src");
    ui.player.load();
    if (ui.sourceServer.checked) {
      ui.playerNote.textContent = "A video named on the server cannot be played here: the server sends no video "
        + "files, only the frames it picks.";
      return;
    }
    const file = ui.file.files[0];
    if (!file) {
      ui.playerNote.textContent = "The chosen video plays here.";
      return;
    }
    state.videoUrl = URL.createObjectURL(file);
    state.videoKey = fileKey(file);
    ui.player.src = state.videoUrl;
    ui.playerNote.textContent = `${file.name} (${bytesText(file.size)}), played from this computer.`;
  }

  function seek(t) {
    if (state.videoUrl === null || !Number.isFinite(t)) {
      ui.playerNote.textContent = "No video to show here: a video named on the server cannot be played here.";
      return;
    }
    ui.player.pause();
    ui.player.currentTime = t;
  }

  // ---- the inference request and its answer ------------------------------------------------------------------
  const tensor = (t) => ({ name: t.name, datatype: t.datatype, shape: t.shape });
  const takes = (name) => state.served === null || state.served.inputs.has(name);
  const gives = (name) => state.served === null || state.served.outputs.has(name);

  // The KServe v2 binary request: the JSON header, then the video's bytes as one BYTES element (its length as 4
  // bytes little-endian, then the bytes), sent from the file as it is read.
  function inferRequest(video, instruction, chosen) {
    const v = SETUP.inputs;
    const inputs = [];
    if (video.file) inputs.push({ ...tensor(v.video), parameters: { binary_data_size: 4 + video.file.size } });
    else inputs.push({ ...tensor(v.video_uri), data: [video.path] });
    inputs.push({ ...tensor(v.instruction), data: [instruction] });
    for (const { o, value } of chosen) inputs.push({ ...tensor(o), data: [value] });
    for (const o of SETUP.fixed) if (takes(o.name)) inputs.push({ ...tensor(o), data: [o.value] });
    const outputs = Object.values(SETUP.outputs).filter(gives)
      .map((name) => ({ name, parameters: { binary_data: name === SETUP.outputs.frames } }));
    const head = new TextEncoder().encode(JSON.stringify({ inputs, outputs }));
    const parts = [head];
    if (video.file) {
      const length = new Uint8Array(4);
      new DataView(length.buffer).setUint32(0, video.file.size, true);
      parts.push(length, video.file);
    }
    return { body: new Blob(parts), headerLength: head.length };
  }

  // The API key the person typed (a server with keys: SETUP.keys), kept for this tab only (sessionStorage), sent on
  // every request of the API; the page's own files need none.
  const KEY_ITEM = "videoitg-api-key";
  function authorized(headers = {}) {
    const key = ui.apiKey.value.trim();
    return key === "" ? headers : { ...headers, Authorization: `Bearer ${key}` };
  }

  async function send(url, init) {
    try {
      return await fetch(url, init);
    } catch (e) {
      throw new ApiError(`The server did not answer (${e.message}).`, 0);
    }
  }

  // The API's own message: KServe's {"error": "..."}, or the OpenAI shape {"error": {"message": ...}}.
  async function failure(response) {
    const text = await response.text();
    let message = null;
    try {
      const error = JSON.parse(text).error;
      if (typeof error === "string") message = error;
      else if (error && typeof error.message === "string") message = error.message;
    } catch (_) {
      message = null;
    }
    return new ApiError(message ?? `HTTP ${response.status}: ${text.slice(0, 2000) || response.statusText}`,
      response.status);
  }

  // The outputs of a KServe v2 answer: JSON data, or binary data after the JSON header, in the outputs' order.
  function readOutputs(buffer, headerLength) {
    const n = headerLength === null ? buffer.byteLength : Number(headerLength);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 0, n)));
    const out = {};
    let at = n;
    for (const o of head.outputs || []) {
      const size = o.parameters && o.parameters.binary_data_size;
      if (typeof size === "number") {
        out[o.name] = { shape: o.shape, bytes: new Uint8Array(buffer, at, size) };
        at += size;
      } else {
        out[o.name] = { shape: o.shape, data: o.data };
      }
    }
    return out;
  }

  // The elements of a binary BYTES tensor: each its length as 4 bytes little-endian, then its bytes.
  function byteElements(bytes) {
    const items = [];
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let at = 0; at + 4 <= bytes.byteLength;) {
      const n = view.getUint32(at, true);
      items.push(bytes.subarray(at + 4, at + 4 + n));
      at += 4 + n;
    }
    return items;
  }

  function resultOf(out) {
    const names = SETUP.outputs;
    const data = (name) => (out[name] && Array.isArray(out[name].data) ? out[name].data : []);
    const flat = data(names.moments);
    const moments = [];
    for (let i = 0; i + 2 < flat.length; i += 3) moments.push(flat.slice(i, i + 3));
    const frames = out[names.frames];
    return {
      scores: data(names.scores), times: data(names.timestamps), frames: data(names.frame_indices),
      ranking: data(names.ranking), picked: data(names.picked), moments, duration: num(data(names.duration)[0]),
      cacheHit: data(names.cache_hit)[0] === true, rule: String(data(names.applied_rule)[0] ?? ""),
      jpegs: frames && frames.bytes ? byteElements(frames.bytes) : [],
    };
  }

  // ---- what the page shows ----------------------------------------------------------------------------------------
  function niceStep(raw) {
    const power = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
    return 10 * power;
  }

  // The relevance curve over the video's time (SVG drawn here): one dot per sampled frame, the picked ones filled,
  // the moments as bands over it and bars under it.
  function drawCurve(r) {
    const W = 960, L = 70, R = 16, T = 14, plotH = 200, laneY = T + plotH + 36, laneH = 16;
    const last = r.times.length > 0 ? Math.max(...r.times) : 0;
    const end = r.duration > 0 ? r.duration : last > 0 ? last : 1;
    const x = (t) => L + (Math.min(Math.max(t, 0), end) / end) * (W - L - R);
    const y = (s) => T + (1 - s) * plotH;
    const svg = ui.curve;
    svg.replaceChildren();
    for (const s of [0, 0.25, 0.5, 0.75, 1]) {
      svg.append(makeSvg("line", { class: "grid", x1: L, x2: W - R, y1: y(s), y2: y(s) }));
      svg.append(makeSvg("text", { class: "axis", x: L - 8, y: y(s) + 4, "text-anchor": "end" }, null, s.toFixed(2)));
    }
    const step = niceStep(end / 10);
    for (let i = 0; i * step <= end + 1e-9; i += 1) {
      const t = i * step;
      svg.append(makeSvg("line", { class: "tick", x1: x(t), x2: x(t), y1: T + plotH, y2: T + plotH + 5 }));
      const label = `${Number(t.toFixed(6))} s`;
      svg.append(makeSvg("text", { class: "axis", x: x(t), y: T + plotH + 19, "text-anchor": "middle" }, null, label));
    }
    svg.append(makeSvg("text", { class: "axis", x: L - 8, y: laneY + 12, "text-anchor": "end" }, null, "moments"));
    r.moments.forEach(([start, stop, score], i) => {
      const width = Math.max(3, x(stop) - x(start));
      const tip = `moment ${i + 1}: ${seconds(start)} to ${seconds(stop)}, score ${score3(score)}`;
      svg.append(makeSvg("rect", { class: "moment-band", x: x(start), y: T, width, height: plotH }));
      svg.append(makeSvg("rect", {
        class: "moment", x: x(start), y: laneY, width, height: laneH, rx: 3, "data-seek": start,
      }, tip));
    });
    const points = r.times.map((t, i) => `${x(t).toFixed(2)},${y(r.scores[i]).toFixed(2)}`).join(" ");
    svg.append(makeSvg("polyline", { class: "curve", points }));
    svg.append(makeSvg("line", { class: "cursor", id: "cursor", x1: L, x2: L, y1: T, y2: T + plotH }));
    const picked = new Set(r.picked);
    r.times.forEach((t, i) => {
      const frame = r.frames[i];
      const isPicked = picked.has(frame);
      const tip = `frame ${frame} at ${seconds(t)}: relevance ${score3(r.scores[i])}${isPicked ? ", picked" : ""}`;
      svg.append(makeSvg("circle", {
        class: isPicked ? "point picked" : "point", cx: x(t), cy: y(r.scores[i]), r: isPicked ? 5.5 : 3.5,
        "data-seek": t, "data-frame": frame, "data-score": r.scores[i],
      }, tip));
    });
    state.curveX = x;
    moveCursor();
  }

  function moveCursor() {
    const cursor = byId("cursor");
    if (cursor === null || state.curveX === null || state.videoKey !== state.resultKey) return;
    const at = state.curveX(ui.player.currentTime || 0).toFixed(2);
    cursor.setAttribute("x1", at);
    cursor.setAttribute("x2", at);
  }

  function showMoments(r) {
    ui.moments.replaceChildren();
    if (r.moments.length === 0) ui.moments.append(make("li", { class: "hint" }, "none"));
    for (const [start, stop, score] of r.moments) {
      const item = make("li");
      item.append(make("button", { type: "button", class: "moment-item", "data-seek": start },
        `${seconds(start)} to ${seconds(stop)} · score ${score3(score)}`));
      ui.moments.append(item);
    }
  }

  function showTiming(r, video, timing) {
    const rows = [
      ["answered in", `${timing.took.toFixed(2)} s, from sending the request to the answer's last byte`],
      ["sent", video.file ? `${bytesText(timing.sent)} (the video and the request)` : `${bytesText(timing.sent)} `
        + "(the video by reference)"],
      ["received", bytesText(timing.received)],
      ["sampled frames", String(r.scores.length)],
      ["picked", counted(r.picked.length, "frame")],
      ["video length", r.duration > 0 ? seconds(r.duration) : "not stated by its container"],
      ["ranking rule", r.rule],
      ["feature cache", r.cacheHit ? "hit: the video's features were reused"
        : "miss: the video was decoded and its features computed"],
    ];
    ui.timing.replaceChildren();
    for (const [name, value] of rows) ui.timing.append(make("dt", {}, name), make("dd", {}, value));
  }

  function showThumbs(r) {
    for (const url of state.thumbUrls) URL.revokeObjectURL(url);
    state.thumbUrls = [];
    state.frameImages.clear();
    ui.thumbs.replaceChildren();
    const position = new Map(r.frames.map((frame, i) => [frame, i]));
    const rank = new Map(r.ranking.map((p, i) => [p, i + 1]));
    r.picked.forEach((frame, k) => {
      const i = position.get(frame);
      const t = r.times[i];
      const button = make("button", {
        type: "button", class: "thumb", "data-seek": t, "data-frame": frame, "data-score": r.scores[i],
      });
      if (k < r.jpegs.length) {
        const url = URL.createObjectURL(new Blob([r.jpegs[k]], { type: "image/jpeg" }));
        state.thumbUrls.push(url);
        state.frameImages.set(frame, url);
        button.append(make("img", { src: url, alt: `frame ${frame} at ${seconds(t)}` }));
      }
      button.append(make("span", { class: "when" }, seconds(t)),
        make("span", { class: "caption" }, `frame ${frame} · ${score3(r.scores[i])} · rank ${rank.get(i)}`));
      ui.thumbs.append(button);
    });
    if (r.picked.length > 0 && r.jpegs.length === 0) {
      ui.thumbs.append(make("p", { class: "hint" }, "This server's model gives no frames as images."));
    }
  }

  function show(r, video, instruction, timing) {
    state.resultKey = video.key;
    ui.asked.textContent = instruction;
    drawCurve(r);
    showMoments(r);
    showTiming(r, video, timing);
    showThumbs(r);
    ui.result.hidden = false;
  }

  // ---- busy, done, refused ------------------------------------------------------------------------------------------
  function begin(label) {
    document.body.dataset.state = "busy";
    ui.score.disabled = true;
    ui.askLlm.disabled = true;
    ui.error.hidden = true;
    ui.error.textContent = "";
    const t0 = performance.now();
    const tick = () => {
      ui.status.textContent = `${label}… ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    };
    tick();
    state.ticker = setInterval(tick, 100);
  }

  function end(outcome, text) {
    clearInterval(state.ticker);
    state.ticker = null;
    document.body.dataset.state = outcome;
    ui.status.textContent = text;
    ui.score.disabled = false;
    ui.askLlm.disabled = false;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = false;
  }

  function failed(error, t0) {
    const took = ((performance.now() - t0) / 1000).toFixed(2);
    if (error instanceof ApiError) {
      const how = error.status > 0 ? `Refused (HTTP ${error.status})`
        : error.status === BROKE_OFF ? "The answer broke off" : "No answer";
      end("error", `${how} after ${took} s; the server's message:`);
      showError(error.message);
    } else {
      end("error", `Failed after ${took} s.`);
      showError(`The page could not read the answer (${error.message}).`);
    }
  }

  // The video and the options a person chose, or null once what is wrong with them is said (nothing is sent).
  function askedFor() {
    try {
      return { video: chosenVideo(), chosen: chosenOptions() };
    } catch (e) {
      refuseHere(e);
      return null;
    }
  }

  function refuseHere(error) {
    document.body.dataset.state = "error";
    ui.status.textContent = "Nothing was sent.";
    showError(error.message);
  }

  // ---- Score --------------------------------------------------------------------------------------------------------
  async function score(event) {
    event.preventDefault();
    if (document.body.dataset.state === "busy") return;
    const asked = askedFor();
    if (asked === null) return;
    const { video, chosen } = asked;
    const instruction = ui.instruction.value;
    const { body, headerLength } = inferRequest(video, instruction, chosen);
    begin(`Scoring (the request holds ${bytesText(body.size)})`);
    const t0 = performance.now();
    try {
      const response = await send(SETUP.infer, {
        method: "POST", body,
        headers: authorized({
          "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": String(headerLength),
        }),
      });
      if (!response.ok) throw await failure(response);
      const buffer = await response.arrayBuffer();
      const took = (performance.now() - t0) / 1000;
      const r = resultOf(readOutputs(buffer, response.headers.get("Inference-Header-Content-Length")));
      show(r, video, instruction, { took, sent: body.size, received: buffer.byteLength });
      end("done", `Scored in ${took.toFixed(2)} s: ${counted(r.scores.length, "sampled frame")}, `
        + `${r.picked.length} picked.`);
      if (!state.serverRead) readServer(); // it answered: what it offers can be read now
    } catch (e) {
      failed(e, t0);
    }
  }

  // ---- Ask the video-LLM (the answer endpoint, streamed) --------------------------------------------------------
  const dataUrl = (file) => new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });

  // Server-sent events of a streamed answer: each `data:` event parsed as JSON, until `[DONE]` or the end.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        text = (text + (done ? decoder.decode() : decoder.decode(value, { stream: true }))).replace(/\r\n/g, "\n");
        let cut;
        while ((cut = text.indexOf("\n\n")) >= 0) {
          const block = text.slice(0, cut);
          text = text.slice(cut + 2);
          const data = block.split("\n").filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
          if (data === "[DONE]") return;
          if (data !== "") onEvent(JSON.parse(data));
        }
        if (done) return;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  function showGiven(info, video) {
    ui.answerFrames.replaceChildren();
    const frames = Array.isArray(info.frames) ? info.frames : [];
    const times = Array.isArray(info.timestamps) ? info.timestamps : [];
    const scores = Array.isArray(info.scores) ? info.scores : [];
    frames.forEach((frame, i) => {
      const t = num(times[i]);
      const button = make("button", { type: "button", class: "thumb small", "data-seek": t, "data-frame": frame });
      const url = state.resultKey === video.key ? state.frameImages.get(frame) : undefined;
      if (url !== undefined) button.append(make("img", { src: url, alt: `frame ${frame} at ${seconds(t)}` }));
      button.append(make("span", { class: "when" }, seconds(t)),
        make("span", { class: "caption" }, `frame ${frame} · ${score3(scores[i])}`));
      ui.answerFrames.append(button);
    });
    if (typeof info.select_s === "number") {
      ui.answerTiming.textContent = `${counted(frames.length, "frame")} picked in ${info.select_s.toFixed(2)} s`;
    }
  }

  async function ask() {
    if (document.body.dataset.state === "busy" || SETUP.answer === null) return;
    const asked = askedFor();
    if (asked === null) return;
    const { video, chosen } = asked;
    const question = ui.instruction.value;
    const extension = SETUP.answer.extension;
    begin("Asking the video-LLM: the server picks the frames, then the video-LLM answers");
    const t0 = performance.now();
    ui.answer.hidden = false;
    ui.answerAsked.textContent = question;
    ui.answerText.replaceChildren();
    ui.answerFrames.replaceChildren();
    ui.answerTiming.textContent = "";
    try {
      // a path as a file URL, its %, # and ? escaped: the endpoint unquotes it back to the same path
      const url = video.file ? await dataUrl(video.file) : `file://${encodeURI(video.path).replace(/[?#]/g, encodeURIComponent)}`;
      const body = {
        model: ui.model.value.trim(), stream: true,
        messages: [{ role: "user", content: [{ type: "video_url", video_url: { url } }, { type: "text", text: question }] }],
      };
      const options = {};
      for (const { o, value } of chosen) if (o.chat) options[o.option] = value;
      if (Object.keys(options).length > 0) body[extension] = options;
      if (ui.maxTokens.value !== "") body.max_tokens = Number(ui.maxTokens.value);
      const response = await send(SETUP.answer.chat, {
        method: "POST", headers: authorized({ "Content-Type": "application/json" }), body: JSON.stringify(body),
      });
      if (!response.ok) throw await failure(response);
      let first = null;
      await readEvents(response, (event) => {
        if (event.error) {
          const message = typeof event.error.message === "string" ? event.error.message : JSON.stringify(event.error);
          throw new ApiError(message, BROKE_OFF);
        }
        if (event[extension]) showGiven(event[extension], video);
        const choice = Array.isArray(event.choices) ? event.choices[0] : null;
        const piece = choice && choice.delta ? choice.delta.content : null;
        if (typeof piece === "string") {
          if (first === null) first = performance.now();
          ui.answerText.append(piece);
        }
      });
      const took = (performance.now() - t0) / 1000;
      const firstWords = first === null ? "" : `, its first words after ${((first - t0) / 1000).toFixed(2)} s`;
      end("done", `Answered in ${took.toFixed(2)} s${firstWords}.`);
    } catch (e) {
      failed(e, t0);
    }
  }

  // ---- what this server offers: the model's inputs and outputs, its media roots, the video-LLM's models -------
  async function getJson(path) {
    const response = await fetch(path, { headers: authorized() });
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  // Whether tritonserver serves behind the front: not while it starts (the page can be opened before), nor while a
  // model is repaired.
  async function isReady() {
    try {
      return (await fetch(SETUP.ready)).ok;
    } catch (_) {
      return false;
    }
  }

  async function readServer() {
    if (state.reading) return;
    state.reading = true;
    try {
      await readOffers();
    } finally {
      state.reading = false;
    }
  }

  // What the server offers, once it is ready; until then the page says it is not and looks again every second.
  async function readOffers() {
    if (!(await isReady())) {
      document.body.dataset.server = "starting";
      ui.roots.textContent = "The server is not ready yet (starting, or repairing a model); this page updates "
        + "itself when it is.";
      setTimeout(readServer, NOT_READY_RETRY_MS);
      return;
    }
    document.body.dataset.server = "ready";
    try {
      const meta = await getJson(SETUP.metadata);
      if (Array.isArray(meta.inputs) && Array.isArray(meta.outputs)) {
        state.served = { inputs: new Set(meta.inputs.map((i) => i.name)), outputs: new Set(meta.outputs.map((o) => o.name)) };
        for (const o of OPTIONS) byId(`option-${o.option}`).closest(".option").hidden = !state.served.inputs.has(o.name);
      }
    } catch (_) {
      state.served = null; // every option offered; the API says what it does not take
    }
    try {
      const config = await getJson(SETUP.config);
      const parameter = config.parameters && config.parameters[SETUP.media_roots];
      const roots = parameter && parameter.string_value ? JSON.parse(parameter.string_value) : [];
      state.serverRead = true;
      if (Array.isArray(roots) && roots.length > 0) {
        ui.roots.textContent = `The server reads videos under ${roots.join(", ")}.`;
      } else {
        ui.roots.textContent = "This server reads no video by reference (it was started without --media-root).";
        ui.sourceServer.disabled = true;
        ui.path.disabled = true;
      }
    } catch (e) {
      ui.roots.textContent = `The server's media roots could not be read (${e.message}).`;
    }
    if (SETUP.answer !== null) {
      ui.answerControls.hidden = false;
      try {
        const listed = await getJson(SETUP.answer.models);
        const ids = (Array.isArray(listed.data) ? listed.data : []).map((m) => m && m.id).filter((id) => typeof id === "string");
        for (const id of ids) ui.models.append(make("option", { value: id }));
        if (ui.model.value === "" && ids.length > 0) ui.model.value = ids[0];
      } catch (_) {
        ui.model.placeholder = "the video-LLM's model name";
      }
    }
  }

  // ---- wiring ---------------------------------------------------------------------------------------------------------
  if (SETUP.keys) {
    ui.keyBox.hidden = false;
    ui.apiKey.value = sessionStorage.getItem(KEY_ITEM) || "";
    ui.apiKey.addEventListener("change", () => {
      sessionStorage.setItem(KEY_ITEM, ui.apiKey.value.trim());
      readServer();
    });
  }
  renderOptions();
  ui.form.addEventListener("submit", score);
  ui.askLlm.addEventListener("click", ask);
  ui.file.addEventListener("change", () => {
    ui.sourceFile.checked = true;
    loadPlayer();
  });
  ui.path.addEventListener("input", () => {
    if (!ui.sourceServer.checked && !ui.sourceServer.disabled) {
      ui.sourceServer.checked = true;
      loadPlayer();
    }
  });
  ui.sourceFile.addEventListener("change", loadPlayer);
  ui.sourceServer.addEventListener("change", loadPlayer);
  ui.player.addEventListener("timeupdate", moveCursor);
  ui.player.addEventListener("seeked", moveCursor);
  ui.player.addEventListener("error", () => {
    if (state.videoUrl !== null) {
      ui.playerNote.textContent = "This browser cannot play this file; the server may still decode and score it.";
    }
  });
  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target.closest("[data-seek]") : null;
    if (target !== null) seek(Number(target.getAttribute("data-seek")));
  });
  readServer();
})();
