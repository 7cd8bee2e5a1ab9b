/* Closeloop's dashboard: HQ's and the store managers' page. It reads the bearer token from the
 * URL's #token= (never sent to a server), keeps it in this tab's sessionStorage, takes it out of
 * the visible URL, and draws the KPIs and alerts of reporting's API with charts.js. Chinese by
 * default, English on request (remembered in localStorage). */
(function () {
  "use strict";

  var TOKEN_KEY = "closeloop.dashboard.token";
  var LANG_KEY = "closeloop.dashboard.lang";
  var ISSUE = "closeloop token issue --role hq_analyst --branch '*' --dashboard";
  var CATEGORIES = ["service_quality", "product_quality", "hygiene_environment", "booking", "price",
                    "staff_attitude", "after_sales", "safety"];
  var COLORS = {service_quality: "#4e79a7", product_quality: "#f28e2b", hygiene_environment: "#59a14f",
                booking: "#76b7b2", price: "#edc948", staff_attitude: "#b07aa1", after_sales: "#9c755f",
                safety: "#e15759"};
  var OTHER_COLORS = ["#bab0ac", "#8cd17d", "#86bcb6", "#d4a6c8"];
  var SLA_COLOR = "#4e79a7", SCORE_COLOR = "#f28e2b", SHARE_COLOR = "#59a14f";
  var ALERTS_SHOWN = 6;  // recurring problems listed before "show all" (safety signals always are)

  var TEXT = {
    zh: {
      title: "Closeloop 总部看板", language: "语言", period: "统计周期", days7: "近 7 天", days30: "近 30 天",
      days90: "近 90 天", from: "从", to: "到", apply: "应用", refresh: "刷新", loading: "正在加载…",
      summary: "概览", byCategory: "各类投诉趋势", slaTrend: "SLA 达标率", scoreTrend: "满意度",
      league: "门店排行", alerts: "待处理预警", breaching: "正在超时的门店", aftercare: "回访覆盖",
      complaints: "投诉", per100: "每百次服务投诉", sla: "SLA 达标率", firstResponse: "首次响应（中位）",
      resolutionRate: "解决率", meanScore: "平均评分", share45: "4–5 分占比", resolutionHours: "解决用时（中位）",
      branch: "门店", visitsDue: "应回访", completed: "已完成", reached: "接通率", abandoned: "已放弃",
      adverse: "不良反应", visitScore: "回访评分", inquiries: "客户咨询", inquiriesReceived: "咨询",
      inquiriesAnswered: "已答复", inquiriesInTime: "按时答复", inquiriesConverted: "转为投诉", hours: "小时", noData: "此周期没有数据",
      noAlerts: "没有待处理的预警", alertsFailed: "预警暂时无法加载（HTTP {s}），请稍后刷新。", noBreaching: "没有正在超时的案件", lateCases: "{n} 件超时",
      firstResponseLate: "首次响应超时", resolutionLate: "解决超时", clockFirst: "首次响应",
      clockResolution: "解决", overdue: "逾期", days: "天", allAlerts: "显示全部 {n} 条预警", fewerAlerts: "收起",
      recurring: "反复出现的问题", safetySignal: "产品安全信号", technician: "技师", batch: "批次",
      complaintsCount: "{n} 起投诉", reactionsCount: "{n} 例不良反应", between: "{a} 至 {b}",
      openUntil: "观察至 {d}", branches: "涉及门店：{b}", scope: "范围", allBranches: "全部门店",
      asOf: "数据截至 {t}（{z}）", periodLabel: "{a} 至 {b}（{n} 天）", byDay: "按天", byWeek: "按周",
      byMonth: "按月", badPeriod: "请选择开始日期不晚于结束日期的周期。",
      missingTitle: "缺少访问令牌", missing: "请使用带令牌的看板链接打开本页。可由管理员执行：",
      expiredTitle: "令牌无效或已过期", expired: "请重新获取看板链接。可由管理员执行：",
      forbiddenTitle: "无权查看指标", forbidden: "此令牌的角色不能查看指标与预警。请使用店长、区域经理或总部分析员的令牌。",
      failedTitle: "无法加载数据", failed: "服务器没有给出可用的答复，请稍后刷新。",
      invalidTitle: "周期无效",
      categories: {service_quality: "服务质量", product_quality: "产品质量", hygiene_environment: "环境卫生",
                   booking: "预约", price: "价格", staff_attitude: "员工态度", after_sales: "售后", safety: "安全",
                   unknown: "未分类"}
    },
    en: {
      title: "Closeloop HQ dashboard", language: "Language", period: "Period", days7: "Last 7 days",
      days30: "Last 30 days", days90: "Last 90 days", from: "From", to: "To", apply: "Apply", refresh: "Refresh",
      loading: "Loading…", summary: "Overview", byCategory: "Complaints by category",
      slaTrend: "SLA compliance", scoreTrend: "Satisfaction", league: "Branch league table",
      alerts: "Open alerts", breaching: "Branches breaching SLA now", aftercare: "Aftercare coverage",
      complaints: "Complaints", per100: "Per 100 services", sla: "SLA compliance",
      firstResponse: "First response (median)", resolutionRate: "Resolution rate", meanScore: "Mean score",
      share45: "Scores 4–5", resolutionHours: "Resolution (median)", branch: "Branch", visitsDue: "Visits due",
      completed: "Completed", reached: "Reached", abandoned: "Abandoned", adverse: "Adverse reactions",
      visitScore: "Visit score", inquiries: "Inquiries", inquiriesReceived: "Inquiries",
      inquiriesAnswered: "Answered", inquiriesInTime: "Answered in time", inquiriesConverted: "Became complaints",
      hours: "h", noData: "No data in this period", noAlerts: "No open alerts",
      alertsFailed: "The alerts could not be loaded (HTTP {s}); refresh in a moment.",
      noBreaching: "No case is breaching its SLA", lateCases: "{n} late cases",
      firstResponseLate: "First response late", resolutionLate: "Resolution late", clockFirst: "first response",
      clockResolution: "resolution", overdue: " overdue", days: "d", allAlerts: "Show all {n} alerts",
      fewerAlerts: "Show fewer", recurring: "Recurring problem",
      safetySignal: "Product safety signal", technician: "Technician", batch: "Batch",
      complaintsCount: "{n} complaints", reactionsCount: "{n} adverse reactions", between: "{a} to {b}",
      openUntil: "watched until {d}", branches: "Branches: {b}", scope: "Scope", allBranches: "All branches",
      asOf: "Figures as of {t} ({z})", periodLabel: "{a} to {b} ({n} days)", byDay: "by day",
      byWeek: "by week", byMonth: "by month", badPeriod: "Choose a period whose start is not after its end.",
      missingTitle: "No access token", missing: "Open this page with a dashboard link that carries a token. An administrator prints one with:",
      expiredTitle: "The token is invalid or has expired", expired: "Get a new dashboard link. An administrator prints one with:",
      forbiddenTitle: "Not allowed to read KPIs", forbidden: "This token's role may not read KPIs and alerts. Use a store manager's, regional manager's or HQ analyst's token.",
      failedTitle: "Could not load the figures", failed: "The server gave no usable answer; refresh in a moment.",
      invalidTitle: "Invalid period",
      categories: {service_quality: "Service quality", product_quality: "Product quality",
                   hygiene_environment: "Hygiene & environment", booking: "Booking", price: "Price",
                   staff_attitude: "Staff attitude", after_sales: "After-sales", safety: "Safety",
                   unknown: "Uncategorised"}
    }
  };

  var state = {lang: "zh", token: null, period: {days: 30}, today: null, zone: "Asia/Shanghai", data: null,
               error: null, seq: 0, sort: {key: "complaints", desc: true},
               allAlerts: false};

  function $(id) { return document.getElementById(id); }

  function t(key, values) {
    var text = TEXT[state.lang][key];
    Object.keys(values || {}).forEach(function (name) { text = text.replace("{" + name + "}", values[name]); });
    return text;
  }

  function make(tag, className, text, parent) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  // -- the token: from the fragment, kept for this tab, out of the visible URL -------------------

  function storage(kind) {
    try { return window[kind]; } catch (e) { return null; }
  }

  function takeToken() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    var token = params.get("token");
    var session = storage("sessionStorage");
    if (token) {
      params.delete("token");
      var rest = params.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
      if (session) session.setItem(TOKEN_KEY, token);
      return token;
    }
    return state.token || (session && session.getItem(TOKEN_KEY));
  }

  function forgetToken() {
    state.token = null;
    var session = storage("sessionStorage");
    if (session) session.removeItem(TOKEN_KEY);
  }

  // -- dates: calendar days as "YYYY-MM-DD" in the chain's time zone -----------------------------

  function zoneDate(instant) {
    var parts = new Intl.DateTimeFormat("en-CA", {timeZone: state.zone, year: "numeric", month: "2-digit",
                                                   day: "2-digit"}).formatToParts(instant);
    var get = function (type) { return parts.find(function (p) { return p.type === type; }).value; };
    return get("year") + "-" + get("month") + "-" + get("day");
  }

  function zoneTime(text) {
    var at = new Date(text);
    var time = new Intl.DateTimeFormat("en-GB", {timeZone: state.zone, hour: "2-digit", minute: "2-digit",
                                                  hourCycle: "h23"}).format(at);
    return zoneDate(at) + " " + time;
  }

  function toDate(day) { return new Date(day + "T00:00:00Z"); }
  function fromDate(d) { return d.toISOString().slice(0, 10); }
  function addDays(day, n) { var d = toDate(day); d.setUTCDate(d.getUTCDate() + n); return fromDate(d); }
  function daysBetween(a, b) { return Math.round((toDate(b) - toDate(a)) / 86400000); }

  function periodStart(day, grain) {
    var d = toDate(day);
    if (grain === "week") d.setUTCDate(d.getUTCDate() - (d.getUTCDay() + 6) % 7);
    if (grain === "month") d.setUTCDate(1);
    return fromDate(d);
  }

  /* Every day, week (its Monday) or month (its 1st) of the period, as the API keys them. */
  function buckets(first, last, grain) {
    var keys = [], key = periodStart(first, grain);
    while (key <= last) {
      keys.push(key);
      if (grain === "month") { var d = toDate(key); d.setUTCMonth(d.getUTCMonth() + 1); key = fromDate(d); }
      else key = addDays(key, grain === "week" ? 7 : 1);
    }
    return keys;
  }

  function grainOf(days) { return days <= 35 ? "day" : days <= 200 ? "week" : "month"; }

  // -- numbers -----------------------------------------------------------------------------------

  function num(v, digits) {
    if (v === null || v === undefined) return "—";
    return Number(v).toLocaleString(state.lang === "zh" ? "zh-CN" : "en", {maximumFractionDigits: digits || 0});
  }
  function pct(v) { return v === null || v === undefined ? "—" : num(v, 1) + "%"; }
  function hours(v) { return v === null || v === undefined ? "—" : num(v, 1) + " " + t("hours"); }
  function score(v) { return v === null || v === undefined ? "—" : num(v, 2); }
  function category(code) { return TEXT[state.lang].categories[code] || code; }

  // -- the API -----------------------------------------------------------------------------------

  function api(path, query) {
    var qs = new URLSearchParams(query || {}).toString();
    return fetch(path + (qs ? "?" + qs : ""), {headers: {"Authorization": "Bearer " + state.token,
                                                         "Accept": "application/json"},
                                               cache: "no-store", credentials: "omit"})
      .then(function (answer) {
        return answer.json().catch(function () { return null; }).then(function (body) {
          if (!answer.ok) throw {status: answer.status, body: body};
          return body;
        });
      });
  }

  /* The period asked for: a preset counts back from the server's today (learnt from the alerts'
   * as_of); the first load, before that is known, takes the API's default (the last 30 days). */
  function periodQuery() {
    var p = state.period;
    if (p.from) return {from: p.from, to: p.to, days: daysBetween(p.from, p.to) + 1};
    if (!state.today && p.days === 30) return {days: 30};
    var today = state.today || zoneDate(new Date());
    return {from: addDays(today, 1 - p.days), to: today, days: p.days};
  }

  function load() {
    state.token = takeToken();
    if (!state.token) return fail({status: 0, kind: "missing"});
    var seq = ++state.seq, period = periodQuery(), grain = grainOf(period.days);
    var range = period.from ? {from: period.from, to: period.to} : {};
    document.body.setAttribute("data-state", "loading");
    return Promise.all([
      api("/v1/kpis", Object.assign({group_by: grain}, range)),
      api("/v1/kpis", Object.assign({group_by: "branch"}, range)),
      api("/v1/alerts").catch(function (problem) {  // the figures are still worth showing without them
        if (problem.status === 401 || problem.status === 403) throw problem;
        return {failed: problem};
      })
    ]).then(function (answers) {
      if (seq !== state.seq) return;
      state.zone = answers[0].time_zone || state.zone;
      state.today = answers[2].as_of ? zoneDate(new Date(answers[2].as_of)) : period.from ? state.today :
        zoneDate(new Date(new Date(answers[0].to).getTime() - 1));
      state.error = null;
      state.data = {series: answers[0], branches: answers[1], alerts: answers[2], grain: grain};
      render();
      document.body.setAttribute("data-state", "ready");
    }, function (problem) {
      if (seq === state.seq) fail(problem);
    });
  }

  function fail(problem) {
    if (problem.status === 401) forgetToken();
    state.error = problem;
    renderError(errorKind(problem));
    document.body.setAttribute("data-state", "error");
  }

  function errorKind(problem) {
    return problem.kind || {401: "expired", 403: "forbidden", 400: "invalid"}[problem.status] || "failed";
  }

  // -- drawing -----------------------------------------------------------------------------------

  function renderError(kind) {
    var box = $("message"), p = state.error;
    box.hidden = false;
    box.setAttribute("data-error", kind);
    document.body.setAttribute("data-error", kind);
    box.textContent = "";
    make("h2", "", t(kind + "Title"), box);
    if (kind === "invalid") {
      var fields = (p.body && p.body.error && p.body.error.fields) || {};
      make("p", "", Object.keys(fields).map(function (f) { return f + ": " + [].concat(fields[f]).join(" "); })
        .join("; ") || t("badPeriod"), box);
      return;
    }
    make("p", "", t(kind), box);
    if (kind === "missing" || kind === "expired") make("code", "command", ISSUE, box);
    if (kind === "failed" && p.status) make("p", "detail", "HTTP " + p.status, box);
  }

  function renderStatic() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    document.title = t("title");
    document.querySelectorAll("[data-i18n]").forEach(function (node) { node.textContent = t(node.dataset.i18n); });
    document.querySelectorAll("[data-i18n-label]").forEach(function (node) {
      node.setAttribute("aria-label", t(node.dataset.i18nLabel));
    });
    document.querySelectorAll("[data-lang]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.lang === state.lang));
    });
    document.querySelectorAll("[data-days]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(!state.period.from && Number(b.dataset.days) === state.period.days));
    });
  }

  function render() {
    renderStatic();
    var kind = state.error && errorKind(state.error);
    if (kind) {
      renderError(kind);
    } else {
      $("message").hidden = true;
      document.body.removeAttribute("data-error");
    }
    if (!state.data || (kind && kind !== "invalid")) return;  // a wrong period keeps the figures shown
    var d = state.data, s = d.series;
    var first = zoneDate(new Date(s.from)), last = zoneDate(new Date(new Date(s.to).getTime() - 1));
    var days = daysBetween(first, last) + 1;
    var label = $("period");
    label.textContent = t("periodLabel", {a: first, b: last, n: days}) + " · " +
      t({day: "byDay", week: "byWeek", month: "byMonth"}[d.grain]) + " · " + t("scope") + ": " +
      (s.branches ? s.branches.join(", ") : t("allBranches"));
    label.setAttribute("data-period", first + "/" + last);
    $("from").value = first;
    $("to").value = last;
    renderSummary(s.totals);
    d.keys = buckets(first, last, d.grain);
    renderCharts(s, d.keys);
    renderLeague(d.branches.groups);
    renderAlerts(d.alerts);
    renderAftercare(s.totals.aftercare);
    renderInquiries(s.totals.inquiries);
    $("asof").textContent = d.alerts.as_of ? t("asOf", {t: zoneTime(d.alerts.as_of), z: state.zone}) : "";
  }

  function cards(container, items) {
    container.textContent = "";
    items.forEach(function (item) {
      var card = make("div", "card" + (item[2] ? " " + item[2] : ""), null, container);
      make("span", "value", item[1], card);
      make("span", "name", t(item[0]), card);
    });
  }

  function renderSummary(f) {
    cards($("summary"), [
      ["complaints", num(f.volume.complaints)], ["per100", num(f.volume.complaints_per_100_services, 2)],
      ["sla", pct(f.response.sla_compliance_pct)], ["firstResponse", hours(f.response.first_response_hours.median)],
      ["resolutionRate", pct(f.response.resolution_rate_pct)], ["meanScore", score(f.satisfaction.mean_score)],
      ["share45", pct(f.satisfaction.share_4_5_pct)]]);
  }

  function renderCharts(s, keys) {
    var byKey = {};
    s.groups.forEach(function (g) { byKey[g.key] = g; });
    var ticks = keys.map(function (k) { return state.data.grain === "month" ? k.slice(0, 7) : k.slice(5); });
    var column = function (read) { return keys.map(function (k) { return byKey[k] ? read(byKey[k]) : null; }); };
    var seen = Object.keys(s.totals.volume.by_category);
    var codes = CATEGORIES.concat(seen.filter(function (c) { return CATEGORIES.indexOf(c) < 0; }).sort());
    CloseloopCharts.bars($("chart-categories"), {
      ticks: ticks, title: t("byCategory"), empty: t("noData"), format: function (v) { return num(v); },
      series: codes.map(function (code, i) {
        return {name: category(code), color: COLORS[code] || OTHER_COLORS[i % OTHER_COLORS.length],
                values: column(function (g) { return g.volume.by_category[code] || 0; })};
      })});
    CloseloopCharts.lines($("chart-sla"), {
      ticks: ticks, title: t("slaTrend"), empty: t("noData"), min: 0, max: 100, format: pct,
      axisFormat: function (v) { return v + "%"; },
      series: [{name: t("sla"), color: SLA_COLOR, values: column(function (g) { return g.response.sla_compliance_pct; })},
               {name: t("resolutionRate"), color: SHARE_COLOR,
                values: column(function (g) { return g.response.resolution_rate_pct; })}]});
    CloseloopCharts.lines($("chart-score"), {
      ticks: ticks, title: t("scoreTrend"), empty: t("noData"), min: 0, max: 5, step: 1, format: score,
      series: [{name: t("meanScore"), color: SCORE_COLOR, values: column(function (g) { return g.satisfaction.mean_score; })},
               {name: t("visitScore"), color: SHARE_COLOR, values: column(function (g) { return g.aftercare.mean_score; })}]});
  }

  var LEAGUE = [
    ["branch", function (g) { return g.key; }, String],
    ["complaints", function (g) { return g.volume.complaints; }, num],
    ["per100", function (g) { return g.volume.complaints_per_100_services; }, function (v) { return num(v, 2); }],
    ["sla", function (g) { return g.response.sla_compliance_pct; }, pct],
    ["meanScore", function (g) { return g.satisfaction.mean_score; }, score],
    ["resolutionHours", function (g) { return g.response.resolution_hours.median; }, hours]];

  function table(element, heads, rows) {
    element.textContent = "";
    var head = make("tr", "", null, make("thead", "", null, element));
    heads.forEach(function (h) { head.appendChild(h); });
    var body = make("tbody", "", null, element);
    rows.forEach(function (cells) {
      var tr = make("tr", "", null, body);
      make("th", "", cells[0], tr).scope = "row";
      cells.slice(1).forEach(function (text) { make("td", "num", text, tr); });
    });
  }

  function renderLeague(groups) {
    var sort = state.sort, column = LEAGUE.filter(function (c) { return c[0] === sort.key; })[0] || LEAGUE[1];
    var rows = groups.slice().sort(function (a, b) {
      var x = column[1](a), y = column[1](b);
      if (x === y) return a.key < b.key ? -1 : 1;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * (sort.desc ? -1 : 1);
    });
    var heads = LEAGUE.map(function (c) {
      var th = document.createElement("th");
      th.scope = "col";
      if (c[0] === sort.key) th.setAttribute("aria-sort", sort.desc ? "descending" : "ascending");
      var button = make("button", "sort", t(c[0]), th);
      button.type = "button";
      button.dataset.sort = c[0];
      return th;
    });
    table($("league"), heads, rows.map(function (g) { return LEAGUE.map(function (c) { return c[2](c[1](g)); }); }));
    $("league").setAttribute("data-rows", String(rows.length));
  }

  function about(alert) {
    var a = alert.about;
    if (alert.by === "branch_category") return a.branch_code + " · " + category(a.category);
    if (alert.by === "technician") return t("technician") + " " + a.technician_id;
    return t("batch") + " " + a.batch;
  }

  function renderAlerts(answer) {
    var list = $("alerts"), more = $("alerts-more"), late = $("breaching");
    list.textContent = late.textContent = "";
    more.hidden = true;
    if (answer.failed) {
      make("li", "none failed", t("alertsFailed", {s: answer.failed.status || "—"}), list);
      return;
    }
    // Safety signals first (they concern the whole chain), then the newest recurring problems.
    var alerts = answer.alerts.filter(function (a) { return a.open; }).sort(function (a, b) {
      return (a.kind === "safety_signal" ? 0 : 1) - (b.kind === "safety_signal" ? 0 : 1);
    });
    if (!alerts.length) make("li", "none", t("noAlerts"), list);
    var shown = state.allAlerts ? alerts : alerts.filter(function (a, i) {
      return i < ALERTS_SHOWN || a.kind === "safety_signal";
    });
    shown.forEach(function (a) {
      var safety = a.kind === "safety_signal";
      var item = make("li", "alert " + (safety ? "safety" : "recurring"), null, list);
      item.dataset.kind = a.kind;
      var head = make("p", "alert-head", null, item);
      make("span", "badge", t(safety ? "safetySignal" : "recurring"), head);
      make("strong", "", about(a), head);
      make("p", "", t(safety ? "reactionsCount" : "complaintsCount", {n: a.count}) + " · " +
        t("between", {a: zoneTime(a.first_at), b: zoneTime(a.last_at)}) + " · " +
        t("openUntil", {d: zoneDate(new Date(a.open_until))}), item);
      make("p", "muted", t("branches", {b: a.branches.join(state.lang === "zh" ? "、" : ", ")}), item);
    });
    if (shown.length < alerts.length || (state.allAlerts && alerts.length > ALERTS_SHOWN)) {
      more.hidden = false;
      more.textContent = state.allAlerts ? t("fewerAlerts") : t("allAlerts", {n: alerts.length});
    }

    var now = new Date(answer.as_of).getTime();
    if (!answer.breaching.length) make("li", "none", t("noBreaching"), late);
    answer.breaching.forEach(function (b) {
      var item = make("li", "alert late", null, late);
      item.dataset.branch = b.branch_code;
      var head = make("p", "alert-head", null, item);
      make("strong", "", b.branch_code, head);
      make("span", "", t("lateCases", {n: b.cases}), head);
      make("p", "muted", t("firstResponseLate") + " " + num(b.first_response) + " · " + t("resolutionLate") + " " +
        num(b.resolution), item);
      var worst = make("ul", "worst", null, item);
      b.worst.slice(0, 3).forEach(function (w) {
        var h = (now - new Date(w.due).getTime()) / 3600000;
        make("li", "", (w.reference || w.case_id.slice(0, 8)) + " — " + t(w.clock === "first_response" ?
          "clockFirst" : "clockResolution") + t("overdue") + " " + (h >= 48 ? num(h / 24, 1) + " " + t("days") :
          hours(h)), worst);
      });
    });
  }

  function renderAftercare(a) {
    cards($("aftercare"), [
      ["visitsDue", num(a.visits_due)], ["completed", num(a.completed)], ["reached", pct(a.reached_pct)],
      ["abandoned", num(a.abandoned)], ["adverse", num(a.adverse_reactions), a.adverse_reactions ? "warn" : ""],
      ["visitScore", score(a.mean_score)]]);
  }

  function renderInquiries(q) {  // consultations, counted apart from the complaints
    cards($("inquiries"), [
      ["inquiriesReceived", num(q.received)], ["inquiriesAnswered", num(q.answered)],
      ["inquiriesInTime", pct(q.answered_in_time_pct)], ["inquiriesConverted", num(q.converted)]]);
  }

  // -- controls ----------------------------------------------------------------------------------

  function setLang(lang) {
    state.lang = TEXT[lang] ? lang : "zh";
    var local = storage("localStorage");
    if (local) local.setItem(LANG_KEY, state.lang);
    render();
  }

  function start() {
    var local = storage("localStorage");
    state.lang = (local && TEXT[local.getItem(LANG_KEY)]) ? local.getItem(LANG_KEY) : "zh";
    document.querySelectorAll("[data-lang]").forEach(function (b) {
      b.addEventListener("click", function () { setLang(b.dataset.lang); });
    });
    document.querySelectorAll("[data-days]").forEach(function (b) {
      b.addEventListener("click", function () { state.period = {days: Number(b.dataset.days)}; renderStatic(); load(); });
    });
    $("custom").addEventListener("submit", function (event) {
      event.preventDefault();
      var from = $("from").value, to = $("to").value;
      if (!from || !to || from > to) return fail({status: 400, body: null});
      state.period = {from: from, to: to};
      renderStatic();
      load();
    });
    $("refresh").addEventListener("click", load);
    $("alerts-more").addEventListener("click", function () {
      state.allAlerts = !state.allAlerts;
      renderAlerts(state.data.alerts);
    });
    $("league").addEventListener("click", function (event) {
      var key = event.target.closest("[data-sort]") && event.target.closest("[data-sort]").dataset.sort;
      if (!key) return;
      state.sort = {key: key, desc: state.sort.key === key ? !state.sort.desc : key !== "branch"};
      renderLeague(state.data.branches.groups);
    });
    window.addEventListener("hashchange", function () { if (/token=/.test(location.hash)) load(); });
    var timer = null;
    window.addEventListener("resize", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        if (state.data && state.data.keys) renderCharts(state.data.series, state.data.keys);
      }, 150);
    });
    renderStatic();
    load();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
