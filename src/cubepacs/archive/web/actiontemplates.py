"""Templates of the admin UI's study actions (upload, labels, send jobs), added to ``uitemplates.TEMPLATES``.

The pages use htmx (``/ui/static/htmx.min.js``, a pinned copy: ``web/static/README.md``) for what a plain form
cannot do — the upload's progress bar, the label list swapped in place, a running job's part of the page
reloaded every second — and work as plain forms and pages without it, except the drop zone: its few lines of
script only put the dropped files (folders walked) into the form's file field and submit it.

Example
-------
>>> sorted(ACTION_TEMPLATES)
['job.html', 'job_part.html', 'jobs.html', 'labels.html', 'upload.html', 'upload_result.html']
"""

from __future__ import annotations

HTMX = '<script src="/ui/static/htmx.min.js"></script>'

UPLOAD = """{% extends "base.html" %}{% block body %}""" + HTMX + """
<style>#drop{border:2px dashed #7a8ea3;border-radius:8px;padding:2rem;text-align:center;background:#fff;margin:.5rem 0}
#drop.over{background:#e3f0fb;border-color:#2a7bc0}progress{width:30rem}</style>
<form id="upload" method="post" enctype="multipart/form-data" action="/ui/upload?csrf={{ csrf }}"
hx-post="/ui/upload?csrf={{ csrf }}" hx-encoding="multipart/form-data" hx-target="#result-box">
<div id="drop">Drop DICOM files, folders or ZIPs here</div>
<p><label>Files or ZIPs <input type="file" name="files" id="files" multiple></label>
<label>or a folder <input type="file" name="folder" id="folder" webkitdirectory></label>
<button type="submit" id="send-files">Upload</button></p>
<p><progress id="progress" value="0" max="100"></progress> <span id="percent"></span></p></form>
<div id="result-box">{% include "upload_result.html" %}</div>
<script>
(function () {
  var form = document.getElementById("upload"), drop = document.getElementById("drop");
  var input = document.getElementById("files"), bar = document.getElementById("progress");
  form.addEventListener("htmx:beforeRequest", function () { bar.value = 0; });
  form.addEventListener("htmx:afterRequest", function () { drop.textContent = "Drop more files, folders or ZIPs"; });
  form.addEventListener("htmx:xhr:progress", function (e) {
    if (!e.detail.total) return;
    bar.value = Math.round(e.detail.loaded * 100 / e.detail.total);
    document.getElementById("percent").textContent = bar.value + " %";
  });
  function walk(entry, out) {  // a dropped folder: every file under it
    return new Promise(function (done) {
      if (entry.isFile) { entry.file(function (f) { out.push(f); done(); }, done); return; }
      var reader = entry.createReader(), found = [];
      (function more() {
        reader.readEntries(function (batch) {
          if (batch.length) { found = found.concat(Array.from(batch)); more(); return; }
          Promise.all(found.map(function (e) { return walk(e, out); })).then(done);
        }, done);
      })();
    });
  }
  drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.className = "over"; });
  drop.addEventListener("dragleave", function () { drop.className = ""; });
  drop.addEventListener("drop", function (e) {
    e.preventDefault(); drop.className = "";
    var items = e.dataTransfer.items, out = [], waits = [];
    for (var i = 0; i < items.length; i++) {
      var entry = items[i].webkitGetAsEntry ? items[i].webkitGetAsEntry() : null;
      if (entry) waits.push(walk(entry, out)); else if (items[i].kind === "file") out.push(items[i].getAsFile());
    }
    Promise.all(waits).then(function () {
      var dt = new DataTransfer();
      out.forEach(function (f) { dt.items.add(f); });
      input.files = dt.files; document.getElementById("folder").value = "";
      drop.textContent = out.length + " file(s) dropped: uploading…";
      htmx.trigger(form, "submit");
    });
  });
})();
</script>{% endblock %}"""

UPLOAD_RESULT = """{% if result %}<p id="result">{{ result.stored }} stored, {{ result.failed }} refused.</p>
{% for s in result.studies %}<p><a class="uploaded" href="/ui/studies/{{ s }}">{{ s }}</a></p>{% endfor %}
<ul>{% for r in result.reasons %}<li class="err">{{ r }}</li>{% endfor %}</ul>{% endif %}"""

LABELS = """<div id="labels" hx-target="this" hx-swap="outerHTML"><b>Labels:</b>
{% for l in labels %}<span class="label">{{ l }}{% if ident.role in ('admin', 'user') %}
<form class="inline" method="post" action="/ui/studies/{{ study_uid }}/labels/{{ l|urlencode }}/remove"
hx-post="/ui/studies/{{ study_uid }}/labels/{{ l|urlencode }}/remove"><input type="hidden" name="csrf"
value="{{ csrf }}"><button class="remove-label" title="remove {{ l }}">×</button></form>{% endif %}</span>
{% else %}<span>none</span>{% endfor %}
{% if ident.role in ('admin', 'user') %}<form class="inline" id="add-label" method="post"
action="/ui/studies/{{ study_uid }}/labels" hx-post="/ui/studies/{{ study_uid }}/labels">
<input type="hidden" name="csrf" value="{{ csrf }}"><input name="label" placeholder="new label" maxlength="64"
required><button>Add label</button></form>{% endif %}
{% if error %}<span class="err">{{ error }}</span>{% endif %}</div>"""

JOBS = """{% extends "base.html" %}{% block body %}
<table id="jobs"><tr><th>Started</th><th>By</th><th>What</th><th>To</th><th>State</th><th>Sent</th><th>Failed</th>
<th>Of</th></tr>
{% for j in jobs %}<tr><td><a href="/ui/jobs/{{ j.id }}">{{ when(j.created) }}</a></td><td>{{ j.principal }}</td>
<td>{{ j.level }} <span class="mono">{{ j.uid }}</span></td><td>{{ j.target }}</td><td class="state">{{ j.state
}}</td><td>{{ j.sent }}</td><td>{{ j.failed }}</td><td>{{ j.total }}</td></tr>
{% else %}<tr><td colspan="8">No job yet.</td></tr>{% endfor %}</table>{% endblock %}"""

JOB_PART = """<div id="job" data-state="{{ job.state }}" {% if job.state in ('queued', 'running', 'cancelling')
%}hx-get="/ui/jobs/{{ job.id }}?part=1" hx-trigger="every 1s" hx-swap="outerHTML"{% endif %}>
<p>{{ job.level }} <span class="mono">{{ job.uid }}</span> to {{ job.target }} — <b id="state">{{ job.state }}</b></p>
<p><progress id="job-progress" value="{{ job.sent + job.failed }}" max="{{ job.total or 1 }}"></progress>
<span id="summary">{{ job.sent }} sent, {{ job.failed }} failed of {{ job.total }}.</span></p>
{% if job.error %}<p class="err" id="job-error">{{ job.error }}</p>{% endif %}
{% if job.state in ('queued', 'running') and ident.role in ('admin', 'user') %}<form method="post" id="cancel"
action="/ui/jobs/{{ job.id }}/cancel" hx-post="/ui/jobs/{{ job.id }}/cancel" hx-target="#job" hx-swap="outerHTML">
<input type="hidden" name="csrf" value="{{ csrf }}"><button class="danger">Cancel the job</button></form>{% endif %}
<table id="sent"><tr><th>SOP Instance UID</th><th>Status</th><th>Sent as</th><th>Comment</th></tr>
{% for r in job.results %}<tr><td class="mono">{{ r.sop_uid }}</td><td>{{ code(r.status) }}</td>
<td>{{ r.sent_as }}</td><td>{{ r.comment or '' }}</td></tr>{% endfor %}</table></div>"""

JOB = """{% extends "base.html" %}{% block body %}""" + HTMX + """<p><a href="/ui/jobs">All jobs</a></p>
{% include "job_part.html" %}{% endblock %}"""

ACTION_TEMPLATES = {"upload.html": UPLOAD, "upload_result.html": UPLOAD_RESULT, "labels.html": LABELS,
                    "jobs.html": JOBS, "job.html": JOB, "job_part.html": JOB_PART}
