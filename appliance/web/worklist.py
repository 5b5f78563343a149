"""The worklist: what needs a person first, and a way to notice new results."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request

from appliance.store import worklist as queries

bp = Blueprint("worklist", __name__)


@bp.get("/")
def index():
    store = current_app.extensions["appliance_store"]
    current = request.args.get("filter", "all")
    if current not in queries.FILTERS:
        current = "all"
    page = max(1, request.args.get("page", 1, type=int))
    data = queries.worklist(store, current, page, current_app.config["APPLIANCE"].timezone)
    return render_template(
        "worklist/index.html", data=data, current=current, marker=queries.latest_marker(store)
    )


@bp.get("/worklist/marker")
def marker():
    """Polled by the page every few seconds: it reloads when this changes."""
    return jsonify({"marker": queries.latest_marker(current_app.extensions["appliance_store"])})
