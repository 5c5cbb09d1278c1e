"""The admin UI's pages: Jinja2 templates (autoescaped), rendered on the server; no script of our own.

Example
-------
>>> html = render("message.html", title="Hello", message="<b>x</b>", ident=None, csrf="")
>>> "&lt;b&gt;x&lt;/b&gt;" in html
True
"""

from __future__ import annotations

import functools
from typing import Any

from cubepacs.archive.web.actiontemplates import ACTION_TEMPLATES

BASE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ title }} — cubepacs</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f4f6f8;color:#13202d}
nav{background:#0b1a2a;padding:.6rem 1rem;display:flex;gap:1.2rem;align-items:center}
nav a,nav button{color:#e8eef5;text-decoration:none;background:none;border:0;font:inherit;cursor:pointer}
nav .who{margin-left:auto;color:#9fb3c8;font-size:.9rem}
main{padding:1rem 1.5rem}
table{border-collapse:collapse;background:#fff;width:100%;margin:.6rem 0}
th,td{border-bottom:1px solid #dde3ea;padding:.3rem .5rem;text-align:left;font-size:.9rem;vertical-align:top}
th{background:#e8eef5}
form.inline{display:inline}
input,select{padding:.3rem;margin:.1rem .3rem .1rem 0}
button{padding:.3rem .8rem;cursor:pointer}
.danger{background:#b3261e;color:#fff;border:0;border-radius:4px}
.err{color:#b3261e}
.mono{font-family:ui-monospace,monospace;font-size:.85rem}
details{margin-left:1rem}
img.thumb{height:64px;background:#000}
.label{background:#dde9f5;border-radius:10px;padding:.1rem .5rem;margin-right:.3rem}
.label button{border:0;background:none;padding:0 .2rem}
a.sort{color:inherit}
</style></head><body>
<nav><a href="/ui">Studies</a>{% if ident and ident.role in ('admin', 'user') %}<a href="/ui/upload">Upload</a><a
href="/ui/export">Export</a>{% endif %}{% if ident %}<a href="/ui/jobs">Jobs</a>{% endif %}
{% if ident and ident.role == 'admin' %}<a href="/ui/admin">Users, keys, sessions</a>
<a href="/ui/audit">Audit log</a><a href="/ui/operations">Operations</a>{% endif %}
<a href="/">Viewer (OHIF)</a>
{% if ident %}<span class="who">{{ ident.principal }} · {{ ident.role }} · tenant {{ ident.tenant }}</span>
<form class="inline" method="post" action="/logout"><button>Sign out</button></form>{% endif %}</nav>
<main><h1>{{ title }}</h1>{% block body %}{% endblock %}</main></body></html>"""

MESSAGE = """{% extends "base.html" %}{% block body %}<p class="{{ kind|default('') }}">{{ message }}</p>
{% if back %}<p><a href="{{ back }}">Back</a></p>{% endif %}{% endblock %}"""

STUDIES = """{% extends "base.html" %}{% block body %}
<form method="get" action="/ui" id="filters">
<input name="PatientName" placeholder="patient name (wildcards *)" value="{{ q.PatientName }}">
<input name="PatientID" placeholder="patient ID" value="{{ q.PatientID }}">
<input name="AccessionNumber" placeholder="accession" value="{{ q.AccessionNumber }}">
<input name="StudyDescription" placeholder="description" value="{{ q.StudyDescription }}">
<input name="ModalitiesInStudy" placeholder="modality" value="{{ q.ModalitiesInStudy }}" size="6">
<input name="from" placeholder="from YYYYMMDD" value="{{ q['from'] }}" size="12">
<input name="to" placeholder="to YYYYMMDD" value="{{ q.to }}" size="12">
<select name="label" id="label-filter"><option value="">any label</option>{% for l in all_labels %}
<option {% if l == q.label %}selected{% endif %}>{{ l }}</option>{% endfor %}</select>
<input type="hidden" name="sort" value="{{ q.sort }}">
<select name="limit">{% for n in (25, 50, 100, 200) %}<option {% if n == limit %}selected{% endif %}>{{ n
}}</option>{% endfor %}</select>
<button type="submit">Search</button></form>
{% macro th(key, text) %}<th><a class="sort" id="sort-{{ key }}" href="?{{ sorted_by(key) }}">{{ text }}{{
' ▲' if q.sort == key else (' ▼' if q.sort == '-' + key else '') }}</a></th>{% endmacro %}
<table id="studies"><tr>{{ th('patient', 'Patient') }}{{ th('patient_id', 'ID') }}{{ th('date', 'Date') }}{{
th('modality', 'Modalities') }}{{ th('description', 'Description') }}{{ th('accession', 'Accession') }}{{
th('series', 'Series') }}{{ th('instances', 'Instances') }}<th>Labels</th><th></th></tr>
{% for s in studies %}<tr><td><a href="/ui/studies/{{ s.study_uid }}">{{ s.patient_name or '(no name)' }}</a></td>
<td>{{ s.patient_id or '' }}</td><td>{{ s.study_date or '' }}</td>
<td>{{ s.modalities|join(', ') if s.modalities is iterable and s.modalities is not string else s.modalities or ''
}}</td>
<td>{{ s.study_description or '' }}</td><td>{{ s.accession_number or '' }}</td><td>{{ s.series }}</td>
<td>{{ s.instances }}</td><td>{% for l in s.labels %}<span class="label">{{ l }}</span>{% endfor %}</td>
<td>{% if ident.role in ('admin', 'user') %}<input type="checkbox" form="selection" name="study" aria-label="select"
value="{{ s.study_uid }}">{% endif %}</td></tr>
{% else %}<tr><td colspan="10">No study matches.</td></tr>{% endfor %}</table>
{% if studies and ident.role in ('admin', 'user') %}<form id="selection" method="get" action="/ui/export">
<button id="export-selected">De-identified export of the selected studies…</button></form>{% endif %}
<p>{% if offset > 0 %}<a id="prev" href="?{{ page(offset - limit) }}">Previous</a>{% endif %}
studies {{ offset + 1 if studies else 0 }}–{{ offset + studies|length }}
{% if more %}<a id="next" href="?{{ page(offset + limit) }}">Next</a>{% endif %}</p>{% endblock %}"""

STUDY = """{% extends "base.html" %}{% block body %}<script src="/ui/static/htmx.min.js"></script>
<p>{{ study.patient_name or '' }} · {{ study.patient_id or '' }} · {{ study.study_date or '' }} ·
{{ study.study_description or '' }}</p>
{% set base = '/ui/studies/' ~ study.study_uid %}
<p><a href="/viewer?StudyInstanceUIDs={{ study.study_uid }}">Open in OHIF</a> · Download:
<a id="zip" href="{{ base }}/zip">ZIP</a> · <a id="zip-dicomdir" href="{{ base }}/zip?dicomdir=1">ZIP with
DICOMDIR</a> · <a id="cubes" href="{{ base }}/cube">cubes (.dcbs, in a ZIP)</a>
{% if ident.role in ('admin', 'user') %} · <a id="export" href="/ui/export?study={{ study.study_uid
}}">De-identified export…</a>{% endif %}
{% if ident.role == 'admin' %} · <a id="delete" href="{{ base }}/delete">Delete…</a>{% endif %}</p>
{% include "labels.html" %}
{% if peers and ident.role in ('admin', 'user') %}<form method="post" action="{{ base }}/send" id="send">
<input type="hidden" name="csrf" value="{{ csrf }}">Send <select name="series" id="send-what"><option value="">the
whole study</option>{% for s in series %}<option value="{{ s.series_uid }}">series {{ s.series_number }} {{
s.series_description or '' }}</option>{% endfor %}</select> to <select name="to" id="send-to">{% for p in peers %}
<option value="{{ p }}">{{ p }}{% if p in web_peers %} (DICOMweb){% endif %}</option>{%
endfor %}</select><button>Send</button></form>{% endif %}
<table id="series"><tr><th></th><th>Number</th><th>Modality</th><th>Description</th><th>Instances</th>
<th>Download</th></tr>
{% for s in series %}<tr><td>{% if s.first %}<img class="thumb" loading="lazy" alt=""
src="/dicom-web/studies/{{ study.study_uid }}/series/{{ s.series_uid }}/instances/{{ s.first }}/thumbnail">{% endif
%}</td>
<td><a href="{{ base }}/series/{{ s.series_uid }}">{{ s.series_number }}</a></td>
<td>{{ s.modality or '' }}</td><td>{{ s.series_description or '' }}</td><td>{{ s.series_related_instances }}</td>
<td><a class="series-zip" href="{{ base }}/series/{{ s.series_uid }}/zip">ZIP</a> ·
<a class="series-cube" href="{{ base }}/series/{{ s.series_uid }}/cube">.dcbs</a></td></tr>
{% endfor %}</table>{% endblock %}"""

SERIES = """{% extends "base.html" %}{% block body %}
<p><a href="/ui/studies/{{ study }}">Study</a></p>
<table id="instances"><tr><th>Number</th><th>SOP Instance UID</th><th>Rows × Columns</th><th>Frames</th></tr>
{% for i in instances %}<tr><td>{{ i.instance_number }}</td>
<td><a class="mono" href="/ui/studies/{{ study }}/series/{{ series }}/instances/{{ i.sop_uid }}">{{ i.sop_uid
}}</a></td>
<td>{{ i.rows }} × {{ i.columns }}</td><td>{{ i.frames or 1 }}</td></tr>{% endfor %}</table>{% endblock %}"""

TAGS = """{% macro table(elements) %}<table class="tags"><tr><th>Tag</th><th>VR</th><th>Name</th><th>Value</th></tr>
{% for e in elements %}<tr data-tag="{{ e.tag }}"><td class="mono">{{ e.tag }}</td><td>{{ e.vr }}</td>
<td>{{ e.name }}</td>
<td>{% if e.children is not none %}<details><summary>{{ e.children|length }} item(s)</summary>
{% for item in e.children %}<p>Item {{ loop.index }}</p>{{ table(item) }}{% endfor %}</details>
{% else %}<span class="mono">{{ e.value }}</span>{% endif %}</td></tr>{% endfor %}</table>{% endmacro %}
{% extends "base.html" %}{% block body %}
<p><a href="/ui/studies/{{ study }}/series/{{ series }}">Series</a> ·
<img class="thumb" alt="" src="/dicom-web/studies/{{ study }}/series/{{ series }}/instances/{{ sop }}/thumbnail"></p>
<h2>File meta</h2><div id="meta">{{ table(meta) }}</div>
<h2>Data set</h2><div id="dataset">{{ table(elements) }}</div>{% endblock %}"""

CONFIRM = """{% extends "base.html" %}{% block body %}
<p>Delete study <span class="mono">{{ study.study_uid }}</span> of {{ study.patient_name }} ({{ study.instances }}
instances) — files, index rows and cubes? This cannot be undone.</p>
<form method="post" action="/ui/studies/{{ study.study_uid }}/delete">
<input type="hidden" name="csrf" value="{{ csrf }}">
<button class="danger" id="confirm">Delete for good</button> <a href="/ui/studies/{{ study.study_uid }}">Cancel</a>
</form>{% endblock %}"""

ADMIN = """{% extends "base.html" %}{% block body %}
{% if new_key %}<p id="new-key">New {{ new_key.role }} key (shown only now): <span class="mono">{{ new_key.key
}}</span></p>{% endif %}
<h2>Users</h2><table id="users"><tr><th>Name</th><th>Role</th><th></th></tr>
{% for u in users %}<tr><td>{{ u.name }}</td><td>{{ u.role }}</td><td>
<form class="inline" method="post" action="/ui/admin/users/{{ u.name|urlencode }}/remove">
<input type="hidden" name="csrf" value="{{ csrf }}"><button class="danger">Remove</button></form>
<form class="inline" method="post" action="/ui/admin/sessions/end"><input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="user" value="{{ u.name }}"><button>End sessions</button></form></td>
</tr>{% endfor %}</table>
<form method="post" action="/ui/admin/users" id="add-user"><input type="hidden" name="csrf" value="{{ csrf }}">
<input name="name" placeholder="user name" required>
<input name="password" type="password" placeholder="password (8+)" required>
<select name="role">{% for r in roles %}<option>{{ r }}</option>{% endfor %}</select>
<button>Add or change user</button></form>
<h2>API keys</h2><table id="keys"><tr><th>Id</th><th>Role</th><th></th></tr>
{% for k in keys %}<tr><td class="mono">{{ k.id }}</td><td>{{ k.role }}</td><td>
<form class="inline" method="post" action="/ui/admin/keys/{{ k.id }}/revoke">
<input type="hidden" name="csrf" value="{{ csrf }}">
<button class="danger">Revoke</button></form></td></tr>{% endfor %}</table>
<form method="post" action="/ui/admin/keys" id="add-key"><input type="hidden" name="csrf" value="{{ csrf }}">
<select name="role">{% for r in roles %}<option>{{ r }}</option>{% endfor %}</select><button>Create key</button></form>
<h2>Sessions</h2>{% if sessions is none %}<p id="no-sessions">This archive keeps no sessions (it runs without its
accounts database): nothing to end.</p>{% else %}
<table id="sessions"><tr><th>Who</th><th>Role</th><th>Since</th><th>Until</th><th></th></tr>
{% for s in sessions %}<tr><td>{{ s.principal }}{% if s.id == ident.session %} (this one){% endif %}</td>
<td>{{ s.role }}</td>
<td>{{ when(s.created) }}</td><td>{{ when(s.expires) }}</td><td>
<form class="inline" method="post" action="/ui/admin/sessions/end">
<input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="id" value="{{ s.id }}">
<button>End</button></form></td></tr>{% endfor %}</table>
<form method="post" action="/ui/admin/sessions/end"><input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="all" value="1"><button class="danger" id="end-all">End all sessions</button>
</form>{% endif %}{% endblock %}"""

AUDIT = """{% extends "base.html" %}{% block body %}
<form method="get" action="/ui/audit"><input name="study" placeholder="study UID" value="{{ q.study }}">
<input name="who" placeholder="who (user:… key:…)" value="{{ q.who }}">
<input name="action" placeholder="action" value="{{ q.action }}">
<button>Filter</button></form>
<table id="audit"><tr><th>Time</th><th>Who</th><th>Role</th><th>Action</th><th>Study</th><th>Detail</th>
<th>Status</th><th>Address</th></tr>
{% for r in rows %}<tr><td>{{ when(r.time) }}</td><td>{{ r.who }}</td><td>{{ r.role }}</td><td>{{ r.action }}</td>
<td class="mono">{{ r.study or '' }}</td><td>{{ r.detail or '' }}</td><td>{{ r.status }}</td>
<td>{{ r.address or '' }}</td></tr>
{% endfor %}</table>
<p>{% if offset > 0 %}<a id="newer" href="?{{ page(offset - limit) }}">Newer</a>{% endif %}
rows {{ offset + 1 if rows else 0 }}–{{ offset + rows|length }}
{% if more %}<a id="older" href="?{{ page(offset + limit) }}">Older</a>{% endif %}</p>{% endblock %}"""

TEMPLATES = {"base.html": BASE, "message.html": MESSAGE, "studies.html": STUDIES, "study.html": STUDY,
             "series.html": SERIES, "tags.html": TAGS, "confirm.html": CONFIRM,
             "admin.html": ADMIN, "audit.html": AUDIT, **ACTION_TEMPLATES}


@functools.lru_cache(maxsize=1)
def environment() -> Any:
    """The Jinja2 environment of the pages (autoescaping on)."""
    import jinja2

    return jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True,
undefined=jinja2.ChainableUndefined)


def render(name: str, **values: Any) -> str:
    """A page as HTML."""
    import time as _time

    values.setdefault("when", lambda t: _time.strftime("%Y-%m-%d %H:%M:%S", _time.gmtime(t)))
    return str(environment().get_template(name).render(**values))
