// Renders this appliance's /openapi.json: operations grouped by tag, with their parameters,
// request bodies, answers (schemas expanded a few levels) and a curl example. No dependencies.
"use strict";
let spec = null;
const MAX_DEPTH = 4;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) if (c != null) node.append(c);
  return node;
}

// `code` spans in descriptions, everything else as text (never as HTML)
function prose(text, tag = "p") {
  const p = el(tag);
  (text || "").split("`").forEach((part, i) => p.append(i % 2 ? el("code", {}, part) : part));
  return p;
}

function resolve(ref) {
  return ref.replace(/^#\//, "").split("/").reduce((node, key) => node[key], spec);
}

function refName(schema) {
  return schema && schema.$ref ? schema.$ref.split("/").pop() : null;
}

function typeLabel(s) {
  if (!s) return "any";
  if (s.$ref) return refName(s);
  if (s.allOf) return s.allOf.map(typeLabel).join(" & "); // a narrowing of msgspec's own union
  if (s.anyOf) return s.anyOf.map(typeLabel).join(" | ");
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.type === "array") return "array of " + typeLabel(s.items);
  if (s.type === "object" && s.additionalProperties) return "map of " + typeLabel(s.additionalProperties);
  return s.type || (s.contentMediaType ? "bytes" : "any");
}

// The schema as a table of fields, its $refs and unions expanded down to MAX_DEPTH
function schemaView(schema, depth = 0) {
  if (!schema || depth > MAX_DEPTH) return null;
  if (schema.$ref) return schemaView(resolve(schema.$ref), depth);
  if (schema.anyOf) {
    const parts = schema.anyOf.filter((s) => s.type !== "null").map((s) => schemaView(s, depth + 1));
    return parts.some((p) => p) ? el("div", { class: "nested" }, ...parts) : null;
  }
  if (schema.type === "array") return schemaView(schema.items, depth + 1);
  if (schema.type === "object" && schema.additionalProperties) return schemaView(schema.additionalProperties, depth + 1);
  if (!schema.properties) return null;
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties).map(([name, prop]) => el("tr", {},
    el("td", {}, el("code", {}, name), required.has(name) ? " *" : ""),
    el("td", { class: "type" }, typeLabel(prop)),
    el("td", {}, "default" in prop ? el("code", {}, JSON.stringify(prop.default)) : ""),
    el("td", {}, schemaView(prop, depth + 1))));
  return el("div", {},
    schema.title ? el("strong", {}, schema.title) : null,
    schema.description ? prose(schema.description) : null,
    el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "default"), el("th", {}, "")), ...rows));
}

function contentView(content) {
  return Object.entries(content || {}).map(([media, body]) => {
    const events = media === "text/event-stream" ? body.schema.oneOf || [] : [];
    const extra = body["x-item-schema"] ? [el("p", {}, "each line:"), schemaView(body["x-item-schema"])] :
      events.map((e) => [e.properties.event.const, e.properties.data.contentSchema]).flatMap(([name, s]) =>
        [el("p", {}, el("code", {}, "event: " + name), " data: ", el("span", { class: "type" }, typeLabel(s))), schemaView(s)]);
    return el("div", {}, el("p", {}, el("code", {}, media), " ", events.length ? "events:" : el("span", { class: "type" }, typeLabel(body.schema))),
      ...extra, events.length ? null : schemaView(body.schema),
      body.example !== undefined ? el("pre", {}, JSON.stringify(body.example, null, 2)) : null);
  });
}

function parametersView(params) {
  if (!params || !params.length) return null;
  return el("div", {}, el("h4", {}, "Parameters"), el("table", {},
    ...params.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
      el("td", { class: "type" }, typeLabel(p.schema)), el("td", {}, p.description || "")))));
}

function responsesView(responses) {
  return el("div", {}, el("h4", {}, "Answers"), ...Object.entries(responses).map(([status, r]) => {
    const answer = r.$ref ? resolve(r.$ref) : r;
    const headers = Object.keys(answer.headers || {}).join(", ");
    return el("div", {}, el("p", {}, el("span", { class: "status" }, status), " ", prose(answer.description, "span")),
      headers ? el("p", { class: "nested" }, "headers: ", el("code", {}, headers)) : null,
      status < "400" ? el("div", { class: "nested" }, ...contentView(answer.content)) : null);
  }), el("p", {}, "Errors are JSON: ", el("code", {}, '{"error": {"message", "type", "code"}}'), "."));
}

function curlExample(method, path, op) {
  const parts = ["curl -s"];
  const body = op.requestBody && op.requestBody.content["application/json"];
  const data = body && body.example !== undefined ? "-d '" + JSON.stringify(body.example) + "'" : null;
  if (method !== "get" && !(method === "post" && data)) parts.push("-X " + method.toUpperCase());
  if (!op.security || op.security.length) parts.push("-H 'Authorization: Bearer KEY'");
  if (data) parts.push(data);
  parts.push(location.origin + path);
  return el("pre", {}, parts.join(" "));
}

function operationView(path, method, op) {
  const open = op.security && !op.security.length;
  return el("details", { class: "op", id: op.operationId },
    el("summary", {}, el("span", { class: "method " + method }, method), " ", el("span", { class: "path" }, path),
      " \u2014 " + op.summary, open ? el("span", { class: "open" }, "open") : null),
    el("div", {}, op.description ? prose(op.description) : null, parametersView(op.parameters),
      op.requestBody ? el("div", {}, el("h4", {}, "Request body"), ...contentView(op.requestBody.content)) : null,
      responsesView(op.responses), el("h4", {}, "Example"), curlExample(method, path, op)));
}

function render() {
  document.title = spec.info.title + " " + spec.info.version + ": HTTP API";
  document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
  document.getElementById("summary").replaceChildren(prose(spec.info.summary), prose(spec.info.description));
  const byTag = new Map((spec.tags || []).map((t) => [t.name, []]));
  for (const [path, item] of Object.entries(spec.paths))
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operationView(path, method, op));
    }
  const main = document.getElementById("api");
  const toc = document.getElementById("toc");
  main.replaceChildren();
  for (const [tag, ops] of byTag) {
    const info = (spec.tags || []).find((t) => t.name === tag);
    toc.append(el("a", { href: "#tag-" + tag }, tag));
    main.append(el("section", { id: "tag-" + tag }, el("h2", {}, tag), info && info.description ? prose(info.description) : null, ...ops));
  }
}

fetch("openapi.json")
  .then((r) => r.json())
  .then((doc) => { spec = doc; render(); })
  .catch((e) => { document.getElementById("api").textContent = "Could not load openapi.json: " + e; });
