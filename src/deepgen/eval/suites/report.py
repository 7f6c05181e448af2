"""`evaluation/report.html` in the MLflow run: one page a person opens from the run's artifacts, self-contained
(images inline): ShapesBench's headline scores per state beside the baselines, then per suite its scores per state
(mean ± standard error, n), per category, or why it is not scored, and the same prompts drawn by every state."""

from __future__ import annotations

import base64
import html
import io
import json

from PIL import Image

from deepgen import storage
from deepgen import tracking as mlflow_log

SHAPES_KEYS = ("overall", "single_object", "single_object_color", "single_object_position", "single_object_shape",
               "two_objects", "counting", "colors", "position", "color_attr", "text_word", "edit_overall",
               "edits_followed", "edits_preserved", "edits_both", "reward")
META = {"generated", "truncated", "failed"}
STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top} td.l,th.l{text-align:left}"
         "img{width:128px;image-rendering:pixelated} .muted{color:#777} .prompt{max-width:360px;text-align:left}")


def log_report(evaluation: dict, plan, tracking: dict | None) -> None:
    mlflow_log.log_text(tracking, render(evaluation, plan), "evaluation/report.html")


def render(evaluation: dict, plan) -> str:
    states = [k for k, v in evaluation.items()
              if isinstance(v, dict) and "overall" in v and not k.startswith("baseline")]
    baselines = [k for k in evaluation if k.startswith("baseline_")]
    parts = [f"<html><head><meta charset='utf-8'><title>Evaluation</title><style>{STYLE}</style></head><body>",
             "<h1>Evaluation</h1>", f"<p>States: {', '.join(states)}. Scores are means with ± one standard error and "
             "n (prompts); a suite that cannot be scored says why.</p>", _shapes(evaluation, states, baselines, plan)]
    for suite in plan.suites:
        parts.append(_suite(suite, {s: evaluation[s].get("suites", {}).get(suite.name) for s in states}))
    return "\n".join(parts + ["</body></html>"])


def _shapes(evaluation: dict, states: list[str], baselines: list[str], plan) -> str:
    columns = states + baselines
    rows = [f"<h2>{html.escape(plan.shapes.title)}</h2>",
            "<p class='muted'>Strict per-category grades (the headline) and graded edit metrics; proportions, so "
            "SE = sqrt(p(1-p)/n). Grids: evaluation/&lt;state&gt;_samples.png and _edits.png.</p>",
            "<table><tr><th class='l'>score</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"]
    for key in SHAPES_KEYS:
        if not any(key in evaluation[c] for c in columns):
            continue
        cells = "".join(f"<td>{_cell(evaluation[c], key)}</td>" for c in columns)
        rows.append(f"<tr><td class='l'>{key}</td>{cells}</tr>")
    rows.append("</table>")
    paired = evaluation.get("rl_vs_sft")
    if paired:
        rows.append(f"<p>rl_vs_sft (paired reward difference): {paired['delta']:+.3f}, 95% interval "
                    f"[{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}], n={paired['n']}</p>")
    return "\n".join(rows)


def _suite(suite, results: dict[str, dict | None]) -> str:
    present = {s: r for s, r in results.items() if r}
    out = [f"<h2>{html.escape(suite.title)} <span class='muted'>({suite.name})</span></h2>",
           f"<p class='muted'>{html.escape(suite.source)}</p>"]
    if not present:
        return "\n".join(out)
    first = next(iter(present.values()))
    out.append(f"<p>{html.escape(first['settings'])}"
               + (f"; {first['truncated']} prompt(s) cut to the model's prompt length" if first.get("truncated")
                  else "")
               + "</p>")
    if not first["scored"]:
        out.append(f"<p><b>Not scored</b>: {html.escape(first['reason'])}</p>")
    else:
        out.append(f"<p>Scored: {html.escape(first['protocol'])}</p>")
        out.append(_scores_table(present))
    out.append(_images(suite, present))
    return "\n".join(out)


def _scores_table(results: dict[str, dict]) -> str:
    states = list(results)
    headline = next(iter(results.values()))["metric"]
    keys = [headline] + sorted({k for r in results.values() for k, v in r.items() if _is_score(k, v)} - {headline})
    rows = ["<table><tr><th class='l'>score</th>" + "".join(f"<th>{html.escape(s)}</th>" for s in states) + "</tr>"]
    for key in keys:
        rows.append(f"<tr><td class='l'>{key}</td>" + "".join(f"<td>{_cell(results[s], key)}</td>" for s in states)
                    + "</tr>")
    categories = sorted({c for r in results.values() for c in r.get("categories", {})})
    for category in categories:
        cats = {s: results[s].get("categories", {}).get(category, {}) for s in states}
        for key in sorted({k for c in cats.values() for k, v in c.items() if _is_score(k, v)}):
            if key != headline and headline in {k for c in cats.values() for k in c}:
                continue  # per category: the headline metric only, where the category reports it
            rows.append(f"<tr><td class='l'>{html.escape(category)}: {key}</td>"
                        + "".join(f"<td>{_cell(cats[s], key)}</td>" for s in states) + "</tr>")
    for note in sorted({r["not_scored_tasks"] for r in results.values() if r.get("not_scored_tasks")}):
        rows.append(f"<tr><td class='l' colspan='{len(states) + 1}'>not scored: {html.escape(note)}</td></tr>")
    return "\n".join(rows + ["</table>"])


def _images(suite, results: dict[str, dict]) -> str:
    records = {s: _records(r) for s, r in results.items()}
    first = next(iter(records.values()))
    keys = list(dict.fromkeys(r["key"] for r in first if r["sample"] == 0))[: suite.settings.report_prompts]
    if not keys:
        return ""
    edits = getattr(suite, "edits", False)
    head = "<tr><th class='l'>prompt</th>" + ("<th>source</th>" if edits else "") + \
        "".join(f"<th>{html.escape(s)}</th>" for s in records) + "</tr>"
    rows = ["<table>", head]
    for key in keys:
        by_state = {s: next((r for r in recs if r["key"] == key and r["sample"] == 0), None)
                    for s, recs in records.items()}
        record = first[[r["key"] for r in first].index(key)]
        cells = [f"<td class='prompt'>{html.escape(record['prompt'][:300])}<br><span class='muted'>"
                 f"{html.escape(record['category'])}</span></td>"]
        if edits:
            cells.append(f"<td>{_img(record.get('source_image'))}</td>")
        metric = next(iter(results.values())).get("metric")
        for state, r in by_state.items():
            score = (r.get("scores") or {}).get(metric) if r else None
            cells.append(f"<td>{_img(r['image'] if r else None)}<br>"
                         + (f"{metric} {score:.2f}" if score is not None else "") + "</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(rows + ["</table>"])


def _records(result: dict) -> list[dict]:
    try:
        return json.loads(storage.read_bytes(result["images"]))
    except (OSError, KeyError, ValueError):
        return []


def _img(uri: str | None) -> str:
    if not uri:
        return ""
    try:
        image = Image.open(io.BytesIO(storage.read_bytes(uri))).convert("RGB")
    except (OSError, ValueError):
        return "<span class='muted'>missing</span>"
    image.thumbnail((256, 256))
    out, kind = io.BytesIO(), "png" if max(image.size) <= 128 else "jpeg"  # JPEG keeps a 4-state, 8-prompt page small
    image.save(out, format=kind.upper(), **({"quality": 85} if kind == "jpeg" else {}))
    return f"<img src='data:image/{kind};base64,{base64.b64encode(out.getvalue()).decode()}'>"


def _is_score(key: str, value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not key.endswith((".n", ".se")) \
        and key not in META


def _cell(scores: dict, key: str) -> str:
    if key not in scores:
        return "<span class='muted'>-</span>"
    value, n, se = scores[key], scores.get(f"{key}.n"), scores.get(f"{key}.se")
    if se is None and n and 0.0 <= value <= 1.0 and key != "reward":
        se = (value * (1 - value) / n) ** 0.5
    return f"{value:.3f}" + (f" ± {se:.3f}" if se is not None else "") + (f" <span class='muted'>(n={int(n)})</span>"
                                                                          if n is not None else "")
