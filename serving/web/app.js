// fractofl web page: send SEM images to this endpoint, show class, probabilities and heat map.
// Served by `fractofl serve local`; talks only to the server it came from (no CDN, no
// other host), with SageMaker's contract: POST /invocations, GET /ping.
"use strict";

(() => {
  const STRINGS = {
    en: {
      title: "What broke this part?",
      subtitle: "Fracture-surface classifier of the consortium",
      switchTo: "日本語",
      dropHint: "Drop SEM images here (PNG, JPEG or TIFF, 16-bit too), or",
      choose: "Choose files",
      opacity: "Heat map opacity",
      batchTitle: "All images",
      downloadCsv: "Download CSV",
      colFile: "File",
      colClass: "Class",
      colProbability: "Probability",
      colVersion: "Model version",
      colStatus: "Status",
      apiKeyPrompt: "This endpoint needs an API key.",
      apiKeySave: "Use key",
      apiKeyWrong: "The key was not accepted. Check it and try again.",
      version: "model {version}",
      queued: "Waiting",
      analysing: "Analysing…",
      waiting: "The endpoint is busy: retrying in {seconds} s",
      needKey: "Waiting for the API key",
      done: "Done",
      failed: "Not analysed",
      predicted: "{label} ({percent})",
      uncertain: "Uncertain: refer to an expert. {reasons}",
      provenance:
        "Model {version}: run {run}, round {round}; members: {members}; signed by {signer} ({verified})",
      verified: "signature verified",
      pixelSize: "Pixel size (µm per pixel), for a model of physical scale",
      wantMap: "Mechanism map",
      dominant: "Mechanism map: {label} covers the most area",
      notVerified: "signature NOT verified",
      notRecorded: "not recorded",
      unsupported: "“{name}” is not a PNG, JPEG or TIFF file, so it was not sent.",
      unreadable:
        "“{name}” could not be read as an image. It may be broken, or another kind of file renamed.",
      tooLarge:
        "“{name}” is {size} MB; the endpoint takes at most {limit} MB, even brought to the model's scale. Run `fractofl predict`, which sends it as tiles.",
      prepared:
        "Sent at the model's scale ({from} → {to} pixels): the file is {size} MB, over the endpoint's {limit} MB.",
      cannotPrepare:
        "“{name}” is {size} MB, over the endpoint's {limit} MB, and this page cannot read it to bring it to the model's scale (it reads PNG, JPEG and uncompressed or LZW TIFF). Run `fractofl predict`, which does.",
      needPixelSize:
        "“{name}” is {size} MB, over the endpoint's {limit} MB: give its pixel size above, so that it can be brought to the model's scale.",
      smallerThanTile:
        "“{name}” at the model's scale is smaller than one tile of {tile} pixels; check its pixel size.",
      scaleTooLarge:
        "“{name}” at the model's scale would be {to} pixels, more than the endpoint takes; check its pixel size.",
      rateLimited: "“{name}”: the endpoint is busy (too many requests). Try again in a minute.",
      network: "The endpoint could not be reached. Is `fractofl serve local` still running?",
      server: "“{name}”: the endpoint answered {status}: {detail}",
    },
    ja: {
      title: "この部品はなぜ壊れたのか？",
      subtitle: "コンソーシアムの破面分類モデル",
      switchTo: "English",
      dropHint: "SEM画像をここにドロップ（PNG・JPEG・TIFF、16ビットも可）、または",
      choose: "ファイルを選択",
      opacity: "ヒートマップの不透明度",
      batchTitle: "すべての画像",
      downloadCsv: "CSVをダウンロード",
      colFile: "ファイル",
      colClass: "分類",
      colProbability: "確率",
      colVersion: "モデルのバージョン",
      colStatus: "状態",
      apiKeyPrompt: "このエンドポイントにはAPIキーが必要です。",
      apiKeySave: "キーを使う",
      apiKeyWrong: "キーが受け付けられませんでした。確認して、もう一度入力してください。",
      version: "モデル {version}",
      queued: "待機中",
      analysing: "解析中…",
      waiting: "エンドポイントが混雑しています：{seconds}秒後に再試行します",
      needKey: "APIキーの入力を待っています",
      done: "完了",
      failed: "解析できませんでした",
      predicted: "{label}（{percent}）",
      uncertain: "不確か：専門家に確認してください。{reasons}",
      provenance:
        "モデル {version}：実行 {run}、ラウンド {round}。参加メンバー：{members}。署名者 {signer}（{verified}）",
      verified: "署名を検証済み",
      pixelSize: "画素サイズ（µm/画素）：物理スケールのモデル用",
      wantMap: "破壊機構マップ",
      dominant: "破壊機構マップ：最も広い領域は{label}",
      notVerified: "署名は未検証",
      notRecorded: "記録なし",
      unsupported: "「{name}」はPNG・JPEG・TIFFファイルではないため、送信しませんでした。",
      unreadable:
        "「{name}」を画像として読み込めませんでした。ファイルが壊れているか、別の形式のファイルの名前を変えたものかもしれません。",
      tooLarge:
        "「{name}」は{size} MBです。モデルのスケールに縮小しても上限の{limit} MBを超えます。タイルに分けて送る `fractofl predict` をお使いください。",
      prepared:
        "モデルのスケールに縮小して送信しました（{from} → {to} 画素）：ファイルは{size} MBで、上限の{limit} MBを超えています。",
      cannotPrepare:
        "「{name}」は{size} MBで上限の{limit} MBを超えています。このページではこのファイルを読み込んでモデルのスケールに縮小できません（PNG・JPEG・非圧縮またはLZWのTIFFに対応）。縮小して送る `fractofl predict` をお使いください。",
      needPixelSize:
        "「{name}」は{size} MBで上限の{limit} MBを超えています。モデルのスケールに縮小できるよう、上の欄に画素サイズを入力してください。",
      smallerThanTile:
        "「{name}」はモデルのスケールでは{tile}画素のタイル1枚より小さくなります。画素サイズを確認してください。",
      scaleTooLarge:
        "「{name}」はモデルのスケールでは{to}画素になり、エンドポイントの上限を超えます。画素サイズを確認してください。",
      rateLimited:
        "「{name}」：エンドポイントが混雑しています（リクエストが多すぎます）。1分ほどしてから、もう一度お試しください。",
      network: "エンドポイントに接続できません。`fractofl serve local` が動いているか確認してください。",
      server: "「{name}」：エンドポイントの応答は {status} でした：{detail}",
    },
  };
  // The consortium's taxonomy (fractofl.core.config.taxonomy.DEFAULT_CLASSES); other class
  // names are shown as they are.
  const CLASS_NAMES = {
    en: {
      fatigue: "Fatigue",
      ductile: "Ductile (dimples)",
      cleavage: "Cleavage (brittle)",
      intergranular: "Intergranular",
    },
    ja: {
      fatigue: "疲労破壊",
      ductile: "延性破壊（ディンプル）",
      cleavage: "へき開破壊（脆性）",
      intergranular: "粒界破壊",
    },
  };
  const CONTENT_TYPES = {
    png: "image/png",
    jpg: "image/jpeg",
    jpeg: "image/jpeg",
    tif: "image/tiff",
    tiff: "image/tiff",
  };
  // matplotlib's tab10, as `fractofl predict --map` colours the classes
  const MAP_COLOURS = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
  ];
  const MAP_MAX_OPACITY = 0.55;
  const KEY_STORAGE = "fractofl.apiKey";
  const LANGUAGE_STORAGE = "fractofl.language";
  const MAX_BUSY_RETRIES = 5;
  const MIB = 1024 * 1024;

  const state = {
    language: initialLanguage(),
    info: null, // GET /ping: model_version, classes, preprocessing, api_key_required, max_payload_bytes
    apiKey: sessionStorage.getItem(KEY_STORAGE) || "",
    keyWaiters: [],
    items: [],
    messages: [], // {key, params}
    running: false,
  };
  const $ = (id) => document.getElementById(id);

  function initialLanguage() {
    const stored = localStorage.getItem(LANGUAGE_STORAGE);
    if (stored in STRINGS) return stored;
    return (navigator.language || "en").toLowerCase().startsWith("ja") ? "ja" : "en";
  }

  function t(key, params = {}) {
    const text = STRINGS[state.language][key] ?? STRINGS.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ""));
  }

  function className(label) {
    return CLASS_NAMES[state.language][label] ?? label;
  }

  function percent(p) {
    return `${(100 * p).toFixed(1)} %`;
  }

  // ---- language -------------------------------------------------------------------
  function applyLanguage() {
    document.documentElement.lang = state.language;
    document.title = `fractofl: ${t("title")}`;
    for (const element of document.querySelectorAll("[data-i18n]")) {
      element.textContent = t(element.dataset.i18n);
    }
    $("language").textContent = t("switchTo");
    showVersion();
    renderMessages();
    for (const item of state.items) renderItem(item);
  }

  function toggleLanguage() {
    state.language = state.language === "en" ? "ja" : "en";
    localStorage.setItem(LANGUAGE_STORAGE, state.language);
    applyLanguage();
  }

  function showVersion() {
    const version = state.info?.model_version;
    $("model-version").textContent = version ? t("version", { version }) : "";
  }

  // ---- messages -------------------------------------------------------------------
  function addMessage(key, params) {
    state.messages.push({ key, params });
    renderMessages();
  }

  function renderMessages() {
    const box = $("messages");
    box.replaceChildren(
      ...state.messages.map(({ key, params }) => {
        const p = document.createElement("p");
        p.textContent = t(key, params);
        p.dataset.messageKey = key;
        return p;
      }),
    );
  }

  // ---- API key --------------------------------------------------------------------
  function askForKey(rejected) {
    $("api-key-panel").hidden = false;
    $("api-key-error").hidden = !rejected;
    $("api-key").focus();
    return new Promise((resolve) => state.keyWaiters.push(resolve));
  }

  function saveKey(event) {
    event.preventDefault();
    state.apiKey = $("api-key").value.trim();
    if (!state.apiKey) return;
    sessionStorage.setItem(KEY_STORAGE, state.apiKey);
    $("api-key-panel").hidden = true;
    const waiters = state.keyWaiters.splice(0);
    for (const resolve of waiters) resolve();
  }

  // ---- files ----------------------------------------------------------------------
  function addFiles(fileList) {
    const files = Array.from(fileList);
    if (files.length === 0) return;
    for (const file of files) {
      const item = { file, name: file.name, status: "queued", prediction: null, error: null };
      item.card = createCard(item);
      item.row = document.createElement("tr");
      state.items.push(item);
      $("results").append(item.card);
      $("batch-rows").append(item.row);
      renderItem(item);
    }
    $("batch").hidden = false;
    if (!state.running) drain();
  }

  async function drain() {
    state.running = true;
    try {
      for (let item; (item = state.items.find((i) => i.status === "queued")); ) {
        await analyse(item);
      }
    } finally {
      state.running = false;
    }
  }

  function extensionOf(name) {
    const dot = name.lastIndexOf(".");
    return dot < 0 ? "" : name.slice(dot + 1).toLowerCase();
  }

  function fail(item, key, params = {}) {
    item.status = "failed";
    item.error = { key, params: { name: item.name, ...params } };
    addMessage(key, item.error.params);
    renderItem(item);
  }

  async function analyse(item) {
    const contentType = CONTENT_TYPES[extensionOf(item.name)];
    if (!contentType) return fail(item, "unsupported");
    let body = item.file;
    let type = `${contentType}; heatmap=true; preview=true${requestOptions()}`;
    const limit = state.info?.max_payload_bytes;
    if (limit && item.file.size > limit) {
      const sizes = { size: (item.file.size / MIB).toFixed(1), limit: (limit / MIB).toFixed(1) };
      if (!state.info.preprocessing) return fail(item, "tooLarge", sizes);
      let prepared;
      try {
        const pixelSize = Number($("pixel-size").value);
        prepared = await window.FractoflPrepare.prepare(
          item.file,
          state.info.preprocessing,
          pixelSize,
        );
      } catch (error) {
        return fail(item, error.key || "cannotPrepare", { ...sizes, ...(error.params || {}) });
      }
      if (prepared.body.length > limit) return fail(item, "tooLarge", sizes);
      body = prepared.body;
      const map = $("want-map").checked ? "; map=true" : "";
      type = `application/x-npy; heatmap=true; preview=true${prepared.parameters}${map}`;
      item.prepared = { from: prepared.from, to: prepared.to, ...sizes };
    }
    for (let busy = 0; ; ) {
      item.status = "analysing";
      renderItem(item);
      const sentKey = state.apiKey;
      let reply;
      try {
        reply = await fetch("/invocations", {
          method: "POST",
          headers: {
            "Content-Type": type,
            Accept: "application/json",
            ...(state.apiKey ? { "X-Api-Key": state.apiKey } : {}),
          },
          body,
        });
      } catch {
        return fail(item, "network");
      }
      if (reply.status === 401) {
        sessionStorage.removeItem(KEY_STORAGE);
        state.apiKey = "";
        item.status = "needKey";
        renderItem(item);
        await askForKey(Boolean(sentKey));
        continue;
      }
      if (reply.status === 429 || reply.status === 503) {
        if (++busy > MAX_BUSY_RETRIES) return fail(item, "rateLimited");
        const seconds = Math.max(1, Number(reply.headers.get("Retry-After")) || 1);
        item.status = "waiting";
        item.waitSeconds = seconds;
        renderItem(item);
        await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
        continue;
      }
      const answer = await reply.json().catch(() => ({}));
      if (reply.ok) {
        item.prediction = answer;
        item.status = "done";
        renderItem(item);
        drawImages(item);
        return;
      }
      const detail = answer.error || reply.statusText;
      if (reply.status === 400 || reply.status === 415) return fail(item, "unreadable");
      if (reply.status === 413) {
        return fail(item, "tooLarge", {
          size: (item.file.size / MIB).toFixed(1),
          limit: ((state.info?.max_payload_bytes || 0) / MIB).toFixed(1),
        });
      }
      return fail(item, "server", { status: reply.status, detail });
    }
  }

  // ---- rendering ------------------------------------------------------------------
  function createCard(item) {
    const card = $("card-template").content.firstElementChild.cloneNode(true);
    card.querySelector(".file-name").textContent = item.name;
    card.querySelector(".heatmap").style.opacity = String($("opacity").value / 100);
    return card;
  }

  function statusText(item) {
    if (item.status === "failed") return t(item.error.key, item.error.params);
    return t(item.status, { seconds: item.waitSeconds });
  }

  function renderItem(item) {
    const { card, row, prediction } = item;
    const failed = item.status === "failed";
    card.classList.toggle("failed", failed);
    card.dataset.status = item.status;
    card.querySelector(".status").textContent = statusText(item);
    const predicted = card.querySelector(".predicted");
    const bars = card.querySelector(".bars");
    if (prediction) {
      const label = prediction.class;
      predicted.textContent = t("predicted", {
        label: className(label),
        percent: percent(prediction.probabilities[label]),
      });
      predicted.dataset.label = label;
      const uncertain = card.querySelector(".uncertain");
      uncertain.hidden = !prediction.uncertain;
      uncertain.textContent = prediction.uncertain
        ? t("uncertain", { reasons: (prediction.uncertain_reasons || []).join("; ") })
        : "";
      bars.replaceChildren(...prediction.classes.map((c) => bar(c, prediction, c === label)));
      const origin = card.querySelector(".provenance");
      const provenance = prediction.provenance;
      origin.hidden = !provenance;
      origin.textContent = provenance
        ? t("provenance", {
            version: provenance.model_version,
            run: provenance.run_id,
            round: provenance.round,
            members: provenance.contributors
              ? provenance.contributors.join(", ")
              : t("notRecorded"),
            signer: provenance.signer,
            verified: t(provenance.signature_verified ? "verified" : "notVerified"),
          })
        : "";
      const note = card.querySelector(".prepared");
      note.hidden = !item.prepared;
      note.textContent = item.prepared ? t("prepared", item.prepared) : "";
      renderLegend(item);
    }
    row.classList.toggle("failed", failed);
    row.replaceChildren(
      cell(item.name),
      cell(prediction ? className(prediction.class) : ""),
      cell(prediction ? percent(prediction.probabilities[prediction.class]) : ""),
      cell(prediction ? prediction.model_version : ""),
      cell(failed ? t("failed") : t(item.status, { seconds: item.waitSeconds })),
    );
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function bar(label, prediction, best) {
    const p = prediction.probabilities[label];
    const li = document.createElement("li");
    li.classList.toggle("best", best);
    li.dataset.label = label;
    const name = document.createElement("span");
    name.textContent = className(label);
    const track = document.createElement("span");
    track.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(100 * p).toFixed(2)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p);
    li.append(name, track, value);
    return li;
  }

  // The pixel size and the map, as content type parameters (a physical-scale model).
  function requestOptions() {
    const pixelSize = Number($("pixel-size").value);
    let options = pixelSize > 0 ? `; pixel_size_um=${pixelSize}` : "";
    if ($("want-map").checked) options += "; map=true";
    return options;
  }

  function drawImages(item) {
    const { image, heatmap, map } = item.prediction;
    if (map && image) drawMap(item, image, map);
    const preview = item.card.querySelector(".preview");
    if (image) {
      preview.src = `data:image/png;base64,${image.png_base64}`;
      preview.alt = item.name;
    }
    if (heatmap) {
      const source = new Image();
      source.onload = () => colourHeatmap(source, item.card.querySelector(".heatmap"));
      source.src = `data:image/png;base64,${heatmap.png_base64}`;
      $("controls").hidden = false;
    }
  }

  // Each tile colours the cells nearer its centre than another's, in its most probable
  // class's colour, more opaque the surer it is (the legend is renderItem's).
  function drawMap(item, image, map) {
    const figure = item.card.querySelector(".map-figure");
    figure.hidden = false;
    figure.querySelector(".map-base").src = `data:image/png;base64,${image.png_base64}`;
    const canvas = figure.querySelector(".map");
    canvas.width = image.width;
    canvas.height = image.height;
    const context = canvas.getContext("2d");
    const surface = Math.min(image.height, Math.round(Math.max(...map.tops) + map.tile_px));
    const rows = cellEdges(map.tops, map.tile_px, surface);
    const cols = cellEdges(map.lefts, map.tile_px, image.width);
    for (let i = 0; i < rows.length - 1; i++) {
      for (let j = 0; j < cols.length - 1; j++) {
        const p = map.probabilities[i][j];
        const best = p.indexOf(Math.max(...p));
        const [r, g, b] = MAP_COLOURS[best % MAP_COLOURS.length];
        context.fillStyle = `rgba(${r}, ${g}, ${b}, ${MAP_MAX_OPACITY * p[best]})`;
        context.fillRect(cols[j], rows[i], cols[j + 1] - cols[j], rows[i + 1] - rows[i]);
      }
    }
    canvas.dataset.drawn = "true";
  }

  function cellEdges(starts, tile, limit) {
    const centres = starts.map((start) => start + tile / 2);
    const middles = centres.slice(1).map((c, k) => Math.round((centres[k] + c) / 2));
    return [0, ...middles, limit];
  }

  function renderLegend(item) {
    const map = item.prediction?.map;
    const box = item.card.querySelector(".map-legend");
    box.hidden = !map;
    if (!map) return;
    box.querySelector(".dominant").textContent = t("dominant", {
      label: className(map.dominant),
    });
    box.querySelector(".legend").replaceChildren(
      ...map.classes.map((label, index) => {
        const li = document.createElement("li");
        li.dataset.label = label;
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = `rgb(${MAP_COLOURS[index % MAP_COLOURS.length].join(", ")})`;
        const text = document.createElement("span");
        text.textContent = `${className(label)}: ${percent(map.fractions[label])}`;
        li.append(swatch, text);
        return li;
      }),
    );
  }

  // Grayscale map (0..255) to colour, transparent where the class is not driven.
  function colourHeatmap(source, canvas) {
    canvas.width = source.naturalWidth;
    canvas.height = source.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(source, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
    const data = pixels.data;
    for (let i = 0; i < data.length; i += 4) {
      const v = data[i] / 255;
      data[i] = 255 * clamp(1.5 - Math.abs(4 * v - 3));
      data[i + 1] = 255 * clamp(1.5 - Math.abs(4 * v - 2));
      data[i + 2] = 255 * clamp(1.5 - Math.abs(4 * v - 1));
      data[i + 3] = 255 * Math.sqrt(v);
    }
    context.putImageData(pixels, 0, 0);
    canvas.dataset.drawn = "true";
  }

  function clamp(x) {
    return Math.min(1, Math.max(0, x));
  }

  function setOpacity() {
    const value = $("opacity").value;
    $("opacity-value").textContent = `${value} %`;
    for (const canvas of document.querySelectorAll("#results .heatmap")) {
      canvas.style.opacity = String(value / 100);
    }
  }

  // ---- CSV ------------------------------------------------------------------------
  function csvField(value) {
    let text = String(value ?? "");
    if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`; // not a formula in a spreadsheet
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function csvText() {
    const classes = state.info?.classes?.length
      ? state.info.classes
      : (state.items.find((i) => i.prediction)?.prediction.classes ?? []);
    const header = ["file", "class", "probability", ...classes.map((c) => `p_${c}`)];
    const lines = [[...header, "model_version", "status", "error"]];
    for (const item of state.items) {
      const p = item.prediction;
      lines.push([
        item.name,
        p ? p.class : "",
        p ? p.probabilities[p.class].toFixed(6) : "",
        ...classes.map((c) => (p ? (p.probabilities[c] ?? 0).toFixed(6) : "")),
        p ? p.model_version : "",
        item.status,
        item.error ? t(item.error.key, item.error.params) : "",
      ]);
    }
    return lines.map((fields) => fields.map(csvField).join(",")).join("\r\n") + "\r\n";
  }

  function downloadCsv() {
    // A byte-order mark, so that spreadsheet programs read Japanese names as UTF-8.
    const blob = new Blob(["\ufeff", csvText()], { type: "text/csv;charset=utf-8" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `fractofl-predictions-${state.info?.model_version ?? "model"}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  // ---- start ----------------------------------------------------------------------
  function wireDropZone() {
    const zone = $("drop-zone");
    // A file dropped anywhere else would make the browser leave the page.
    for (const name of ["dragover", "drop"]) {
      document.addEventListener(name, (event) => event.preventDefault());
    }
    zone.addEventListener("dragover", () => zone.classList.add("dragging"));
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      zone.classList.remove("dragging");
      addFiles(event.dataTransfer.files);
    });
    $("files").addEventListener("change", (event) => {
      addFiles(event.target.files);
      event.target.value = ""; // the same file may be chosen again
    });
  }

  async function start() {
    $("language").addEventListener("click", toggleLanguage);
    $("api-key-form").addEventListener("submit", saveKey);
    $("opacity").addEventListener("input", setOpacity);
    $("download-csv").addEventListener("click", downloadCsv);
    wireDropZone();
    applyLanguage();
    try {
      const reply = await fetch("/ping");
      state.info = await reply.json();
    } catch {
      addMessage("network", {});
      return;
    }
    showVersion();
    if (state.info.api_key_required && !state.apiKey) askForKey(false);
    document.body.dataset.ready = "true";
  }

  start();
})();
