"""``/ui/operations`` (admins): what an operator watches, from the same sources as ``/metrics``.

* the queue: storage events not yet indexed and the age of the oldest (asked of the queue when the page is
  drawn, as the indexer does every few seconds, and written to the same gauges ``/metrics`` shows);
* indexing and cube building: instances indexed, series built/failed by the web worker (counters), and the
  tenant's series pending, built and failed for good (the index's work table), with the failed ones listed; the
  instances the builder could not put in a cube (served from their files);
* storage used per tenant (the index: instances and bytes; and the bytes received by C-STORE) and free space;
* DIMSE associations open and refused, C-STOREs by status, instances refused by protocol — and the recent failed
  associations and refused instances themselves (``observability/events.py``; another tenant's are not shown).

Every number is read from the process' Prometheus registry (``metrics.registry()``: all processes' in multiprocess
mode), so the page and a scrape of ``/metrics`` agree; the counters start at zero when ``serve`` starts.

Example
-------
>>> from prometheus_client import CollectorRegistry, Counter
>>> r = CollectorRegistry(); c = Counter("x", "x", ["tenant"], registry=r); c.labels(tenant="a").inc(2)
>>> total(samples(r), "x_total", tenant="a"), total(samples(r), "x_total", tenant="b")
(2.0, 0.0)
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from cubepacs.archive.index.models import dicom_instance, dicom_json_meta
from cubepacs.archive.observability import events, metrics
from cubepacs.archive.queue.base import STORAGE_TOPIC
from cubepacs.archive.web.auth import Identity
from cubepacs.archive.web.pages import UI, render_page, who
from cubepacs.archive.web.uitemplates import TEMPLATES

log = logging.getLogger("cubepacs.opsui")
INDEXER_GROUP = "indexer"  # the indexer's consumer group (services/indexer.py)
Sample = tuple[str, dict[str, str], float]

OPS = """{% extends "base.html" %}{% block body %}
<p>Counters since this archive started (as <a href="/metrics">/metrics</a> shows them); series and storage from
the index.</p>
<h2>Queue and indexing</h2><table id="queue">
<tr><th>Storage events not yet indexed</th><td id="queue-waiting">{{ n(o.queue_waiting) }}</td></tr>
<tr><th>Oldest waiting (s)</th><td id="queue-oldest">{{ '%.1f' % o.queue_oldest }}</td></tr>
<tr><th>Instances indexed</th><td id="indexed">{{ n(o.indexed) }}</td></tr></table>
<h2>Cube building</h2><table id="builds">
<tr><th>Series of this tenant pending</th><td id="series-pending">{{ o.series.pending }}</td></tr>
<tr><th>… built</th><td id="series-built">{{ o.series.built }}</td></tr>
<tr><th>… failed for good</th><td id="series-failed">{{ o.series.failed }}</td></tr>
<tr><th>Builds done (cube / metadata only / failed attempts)</th>
<td id="builds-done">{{ n(o.builds.ok) }} / {{ n(o.builds['metadata-only']) }} / {{ n(o.builds.failed) }}</td></tr>
<tr><th>Instances the builder could not put in a cube</th><td id="not-compacted">{{ n(o.not_compacted) }}</td></tr>
</table>
{% if o.recent_not_compacted %}<table id="left-out"><tr><th>Time</th><th>Series</th><th>Instance and why (served
from its file)</th></tr>{% for e in o.recent_not_compacted %}<tr><td>{{ when(e.time) }}</td><td class="mono">{{
e.source }}</td><td class="mono">{{ e.detail }}</td></tr>{% endfor %}</table>{% endif %}
{% if o.failed_series %}<table id="failed-series"><tr><th>Study</th><th>Series</th><th>Attempts</th><th>Since</th>
</tr>{% for s in o.failed_series %}<tr><td class="mono"><a href="/ui/studies/{{ s.study_uid }}">{{ s.study_uid
}}</a></td><td class="mono">{{ s.series_uid }}</td><td>{{ s.retry_times }}</td><td>{{ s.updated_time }}</td></tr>
{% endfor %}</table>{% endif %}
<h2>Storage</h2><table id="storage"><tr><th>Tenant</th><th>Instances</th><th>Bytes of its instances</th>
<th>Bytes received by C-STORE</th></tr>
{% for t in o.storage %}<tr data-tenant="{{ t.tenant }}"><td>{{ t.tenant }}</td><td class="instances">{{ t.instances
}}</td><td class="bytes">{{ t.bytes }}</td><td class="cstore-bytes">{{ n(t.cstore_bytes) }}</td></tr>{% endfor %}
</table>
{% for path, free in o.disk_free %}<p>Free on {{ path }}: {{ n(free) }} bytes</p>{% endfor %}
<h2>DIMSE</h2><table id="dimse">
<tr><th>Associations open</th><td id="assoc-open">{{ n(o.assoc_open) }}</td></tr>
<tr><th>Associations rejected</th><td id="assoc-rejected">{{ n(o.assoc_refused.rejected) }}</td></tr>
<tr><th>Associations aborted</th><td id="assoc-aborted">{{ n(o.assoc_refused.aborted) }}</td></tr>
{% for status, count in o.cstores %}<tr><th>C-STORE status {{ status }}</th><td>{{ n(count) }}</td></tr>{% endfor %}
</table>
<h2>Refused instances</h2><table id="refused-counts"><tr><th>Protocol</th><th>Refused (this tenant)</th></tr>
{% for p, count in o.refused %}<tr data-protocol="{{ p }}"><td>{{ p }}</td><td class="count">{{ n(count) }}</td>
</tr>{% endfor %}</table>
<table id="refused"><tr><th>Time</th><th>Protocol</th><th>Why</th></tr>
{% for e in o.recent_refused %}<tr><td>{{ when(e.time) }}</td><td>{{ e.source }}</td><td>{{ e.detail }}</td></tr>
{% else %}<tr><td colspan="3">None.</td></tr>{% endfor %}</table>
<h2>Recent failed associations</h2><table id="failed-associations"><tr><th>Time</th><th>Calling</th><th>Address</th>
<th>What</th></tr>
{% for e in o.recent_associations %}<tr><td>{{ when(e.time) }}</td><td>{{ e.source }}</td><td>{{ e.address or ''
}}</td><td>{{ e.detail }}</td></tr>{% else %}<tr><td colspan="4">None.</td></tr>{% endfor %}</table>
{% endblock %}"""


def samples(registry: Any) -> list[Sample]:
    """Every sample of a Prometheus registry: (name, labels, value)."""
    return [(s.name, dict(s.labels), float(s.value)) for family in registry.collect() for s in family.samples]


def total(rows: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return float(sum(v for n, lab, v in rows if n == name and all(lab.get(k) == x for k, x in labels.items())))


def _by(rows: list[Sample], name: str, label: str, **labels: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, lab, v in rows:
        if n == name and all(lab.get(k) == x for k, x in labels.items()):
            out[lab.get(label, "")] = out.get(lab.get(label, ""), 0.0) + v
    return out


def _index_numbers(index: Any, tenant: str) -> tuple[dict[str, int], list[dict[str, Any]], list[dict[str, Any]]]:
    """(series of ``tenant`` by build state, its failed series, storage per tenant) from the index."""
    from sqlalchemy import func, select

    j, i = dicom_json_meta, dicom_instance
    states = {0: "pending", 1: "built", 2: "failed"}
    with index.engine.connect() as conn:
        counted = conn.execute(select(j.c.json_status, func.count()).where(j.c.tenant_id == tenant)
                               .group_by(j.c.json_status)).all()
        failed = conn.execute(select(j.c.study_uid, j.c.series_uid, j.c.retry_times, j.c.updated_time)
                              .where(j.c.tenant_id == tenant, j.c.json_status == 2)
                              .order_by(j.c.updated_time.desc()).limit(100)).all()
        storage = conn.execute(select(i.c.tenant_id, func.count(), func.coalesce(func.sum(i.c.size), 0))
                               .group_by(i.c.tenant_id).order_by(i.c.tenant_id)).all()
    series = {name: 0 for name in states.values()}
    for status, count in counted:
        series[states.get(status, "pending")] += int(count)
    return (series, [dict(r._mapping) for r in failed],
            [{"tenant": t, "instances": int(n), "bytes": int(b)} for t, n, b in storage])


def operations(services: Any, tenant: str) -> dict[str, Any]:
    """What the page shows, for an admin of ``tenant`` (runs queries: call it in a thread)."""
    try:  # as the indexer does every few seconds: the same gauges, fresh
        metrics.update_queue_lag(services.queue, STORAGE_TOPIC, INDEXER_GROUP)
    except Exception as exc:  # a queue that is away: the last known values are shown
        log.warning("operations page: queue lag: %s: %s", type(exc).__name__, str(exc)[:200])
    rows = samples(metrics.registry())
    series, failed_series, storage = _index_numbers(services.index, tenant)
    cstore_bytes = _by(rows, "cubepacs_cstore_bytes_total", "tenant")
    for t in storage:
        t["cstore_bytes"] = cstore_bytes.get(t["tenant"], 0.0)
    accounts = getattr(services.sessions, "path", None)
    return {
        "queue_waiting": total(rows, "cubepacs_queue_waiting"),
        "queue_oldest": total(rows, "cubepacs_queue_oldest_seconds"),
        "indexed": total(rows, "cubepacs_indexed_instances_total"),
        "series": series, "failed_series": failed_series,
        "builds": {k: total(rows, "cubepacs_webworker_builds_total", result=k)
                   for k in ("ok", "metadata-only", "failed")},
        "not_compacted": total(rows, "cubepacs_instances_not_compacted_total"),
        "storage": storage,
        "disk_free": sorted(_by(rows, "cubepacs_disk_free_bytes", "path").items()),
        "assoc_open": total(rows, "cubepacs_associations_open"),
        "assoc_refused": {k: total(rows, "cubepacs_associations_refused_total", reason=k)
                          for k in ("rejected", "aborted")},
        "cstores": sorted(_by(rows, "cubepacs_cstore_total", "status", tenant=tenant).items()),
        "refused": [(p, total(rows, "cubepacs_instances_refused_total", tenant=tenant, protocol=p))
                    for p in ("C-STORE", "STOW-RS")],
        "recent_refused": events.recent(accounts, "refused-instance", tenant) if accounts else [],
        "recent_associations": events.recent(accounts, "failed-association", tenant) if accounts else [],
        "recent_not_compacted": events.recent(accounts, "not-compacted", tenant) if accounts else [],
    }


def _number(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:.1f}"


def add_routes(app: FastAPI, services: Any) -> None:
    """Register ``/ui/operations`` (before the viewer's catch-all)."""
    TEMPLATES.setdefault("operations.html", OPS)

    @app.get(UI + "/operations")
    async def operations_page(request: Request) -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        numbers = await run_in_threadpool(operations, services, ident.tenant)
        page: HTMLResponse = render_page("operations.html", title="Operations", ident=ident, o=numbers, n=_number)
        return page
