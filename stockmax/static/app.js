// The live page: a chart per symbol (price from the finest closed bars, each window's sliding max and min
// as a band of two lines, alerts as markers), fed by the WebSocket stream; scrolling left loads older bars.
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token");
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const COLORS = ["#f0883e", "#3fb950", "#a371f7", "#db61a2", "#58a6ff", "#e3b341"];
const state = { events: 0, frames: 0, charts: {}, windows: [], socket: null };
window.stockmax = state; // what the browser test reads

const seconds = (us) => Math.floor(us / 1e6);

async function api(path) {
  const response = await fetch(path, { headers });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.detail : response.statusText);
  return body;
}

function setPoint(series, points, time, value) {
  // The chart takes points in time order; a point for the same second replaces the last one.
  const last = points.length ? points[points.length - 1].time : -Infinity;
  if (time < last) return;
  if (time === last) points[points.length - 1].value = value; else points.push({ time, value });
  series.update({ time, value });
}

function makeChart(symbol) {
  const box = document.createElement("section");
  box.className = "chart";
  box.innerHTML = `<h2>${symbol} <span class="legend"></span></h2><div class="plot"></div>`;
  document.getElementById("charts").appendChild(box);
  const chart = LightweightCharts.createChart(box.querySelector(".plot"), {
    layout: { background: { color: "#0f1419" }, textColor: "#d8dee9" },
    grid: { vertLines: { color: "#1c2128" }, horzLines: { color: "#1c2128" } },
    timeScale: { timeVisible: true, secondsVisible: true },
    autoSize: true,
  });
  const price = chart.addSeries(LightweightCharts.LineSeries, { color: "#d8dee9", lineWidth: 2, title: "price" });
  const entry = { symbol, chart, price, pricePoints: [], bands: {}, markers: LightweightCharts.createSeriesMarkers(price, []),
                  alerts: [], drawn: 0, oldestUs: null, loading: false, box };
  const legend = box.querySelector(".legend");
  state.windows.forEach((window, i) => {
    const color = COLORS[i % COLORS.length];
    const style = { color, lineWidth: 1, lineStyle: LightweightCharts.LineStyle.Dashed, lastValueVisible: false,
                    priceLineVisible: false };
    entry.bands[window] = { max: chart.addSeries(LightweightCharts.LineSeries, { ...style, title: `max ${window}` }),
                            min: chart.addSeries(LightweightCharts.LineSeries, { ...style, title: `min ${window}` }),
                            maxPoints: [], minPoints: [] };
    legend.insertAdjacentHTML("beforeend", `<span style="color:${color}">${window} max/min</span>`);
  });
  chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
    if (range && range.from < 5) loadOlder(entry);
  });
  return entry;
}

async function loadOlder(entry) {
  // Zooming or scrolling back: one more hour of 1 m bars before the oldest point shown.
  if (entry.loading) return;
  entry.loading = true;
  try {
    const end = entry.oldestUs ?? Date.now() * 1000;
    const start = end - 3600e6;
    const body = await api(`/api/v1/stocks/${encodeURIComponent(entry.symbol)}/history?start=${start}&end=${end}&resolution=1m`);
    if (body.bars.length) {
      const older = body.bars.map((b) => ({ time: seconds(b.bucket_start), value: b.close }));
      const first = entry.pricePoints.length ? entry.pricePoints[0].time : Infinity;
      entry.pricePoints = older.filter((p) => p.time < first).concat(entry.pricePoints);
      entry.price.setData(entry.pricePoints);
      entry.oldestUs = start;
    }
  } catch (error) {
    // No history yet (a new symbol, or no store): the live part still draws.
  } finally {
    entry.loading = false;
  }
}

function draw(event) {
  const entry = state.charts[event.symbol];
  if (!entry) return;
  if (event.type === "price_update") {
    setPoint(entry.price, entry.pricePoints, seconds(event.bucket_start), event.close);
  } else if (event.type === "max_change") {
    const band = entry.bands[event.window];
    if (!band) return;
    setPoint(band.max, band.maxPoints, seconds(event.event_time), event.max);
    setPoint(band.min, band.minPoints, seconds(event.event_time), event.min);
  } else if (event.type === "alert") {
    entry.alerts.push({ time: seconds(event.event_time), position: event.change_pct >= 0 ? "aboveBar" : "belowBar",
                        color: event.change_pct >= 0 ? "#3fb950" : "#f85149", shape: "circle",
                        text: `${event.kind} ${event.change_pct.toFixed(2)}%` });
    entry.alerts.sort((a, b) => a.time - b.time);
    entry.markers.setMarkers(entry.alerts);
  } else {
    return;
  }
  entry.drawn += 1;
}

function connect(symbols, windows) {
  if (state.socket) state.socket.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/v1/stream${token ? `?token=${encodeURIComponent(token)}` : ""}`);
  state.socket = socket;
  const status = document.getElementById("status");
  socket.onopen = () => {
    socket.send(JSON.stringify({ subscribe: symbols, windows, events: ["price_update", "max_change", "alert"] }));
    status.textContent = "live";
  };
  socket.onmessage = (message) => {
    state.frames += 1;
    for (const event of JSON.parse(message.data)) {
      if (event.type === "error") { status.textContent = `error: ${event.detail}`; continue; }
      if (event.type === "subscribed") continue;
      state.events += 1;
      draw(event);
    }
    status.textContent = `live · ${state.events} updates`;
  };
  socket.onclose = (close) => {
    status.textContent = `disconnected (${close.reason || close.code}); reconnecting…`;
    setTimeout(() => { if (state.socket === socket) connect(symbols, windows); }, 2000);
  };
}

function show() {
  const symbols = document.getElementById("symbols").value.split(",").map((s) => s.trim()).filter(Boolean);
  const windows = [...document.querySelectorAll("#windows input:checked")].map((box) => box.value);
  document.getElementById("charts").innerHTML = "";
  state.charts = {};
  for (const symbol of symbols) {
    const entry = (state.charts[symbol] = makeChart(symbol));
    // History up to the symbol's latest committed time (a replay's event time may be long past), else now.
    api(`/api/v1/stocks/${encodeURIComponent(symbol)}/max?window=${state.windows[0]}`)
      .then((live) => { entry.oldestUs = live.valid_at + 1; }, () => {})
      .finally(() => loadOlder(entry));
  }
  const query = new URLSearchParams(location.search);
  query.set("symbols", symbols.join(","));
  history.replaceState(null, "", `?${query}`);
  connect(symbols, windows);
}

async function start() {
  const config = await api("/api/v1/config");
  state.windows = config.windows;
  document.getElementById("windows").innerHTML = config.windows
    .map((w) => `<label><input type="checkbox" value="${w}" checked> ${w}</label>`).join(" ");
  document.getElementById("symbols").value = params.get("symbols") || "";
  document.getElementById("show").onclick = show;
  if (params.get("symbols")) show();
}

start().catch((error) => { document.getElementById("status").textContent = `error: ${error.message}`; });
