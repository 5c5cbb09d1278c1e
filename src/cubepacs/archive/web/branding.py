"""OHIF configured for this archive through its own app-config keys: the name in place of OHIF's logo
(``whiteLabeling.createLogoComponentFn``, a link to the archive's pages at ``/ui``), the "investigational use"
banner (``investigationalUseDialog``: off unless ``viewer_banner`` asks for it) and the first-visit tour (the
``ohif.tours`` customization, replaced through ``customizationService``: the archive's name and where its own
pages are, then OHIF's scrolling hint, each step with its button).

The keys were read from OHIF 3.13's sources (``platform/app`` WorkList and ``extensions/default`` ViewerLayout:
``appConfig.whiteLabeling.createLogoComponentFn(React, props)``, ``appConfig.investigationalUseDialog.option`` —
``never``, ``always`` or ``configure`` with ``days`` —, ``customizationService.getCustomization('ohif.tours')``).
Values are JSON-encoded into the script, so a name cannot break out of it.

Example
-------
>>> js = branding_js("Saint Example PACS", "never")
>>> '"option": "never"' in js and '"Saint Example PACS"' in js
True
>>> check_banner("sometimes")
Traceback (most recent call last):
...
cubepacs.errors.ConfigError: viewer_banner: 'sometimes' is not never, always or configure:DAYS
"""

from __future__ import annotations

import json

from cubepacs.errors import ConfigError

_JS = """
(function (cfg, name) {{
  cfg.whiteLabeling = {{
    createLogoComponentFn: function (React) {{
      return React.createElement("a", {{
        href: "/ui", id: "cubepacs-logo", title: name + ": the archive's pages",
        style: {{ color: "inherit", fontWeight: 600, fontSize: "16px", textDecoration: "none",
                  whiteSpace: "nowrap" }}
      }}, name);
    }}
  }};
  cfg.investigationalUseDialog = {banner};
  var button = function (text, last) {{
    return {{ text: text, action: function () {{ return last ? this.complete() : this.next(); }} }};
  }};
  cfg.customizationService = {{ "ohif.tours": {{ $set: [{{
    id: "cubepacsViewerTour", route: "/viewer",
    steps: [
      {{ id: "archive", title: name,
         text: "Images come from the archive. Its own pages (studies, upload, download, send, export, users) " +
               "are at /ui: click the name at the top left.",
         buttons: [button("Next", false)] }},
      {{ id: "scroll", title: "Scrolling through images",
         text: "Scroll with the mouse wheel or the scrollbar; drag with the left button for window/level, the " +
               "right one to zoom, the middle one to pan.",
         attachTo: {{ element: ".viewport-element", on: "top" }}, buttons: [button("Done", true)] }}
    ]
  }}] }} }};
}})(window.config, {name});
"""


def check_banner(value: str) -> dict[str, object]:
    """OHIF's ``investigationalUseDialog`` for a ``viewer_banner`` setting: ``never``, ``always`` or
    ``configure:DAYS`` (shown until confirmed, then hidden for DAYS days)."""
    if value in ("never", "always"):
        return {"option": value}
    kind, _, days = value.partition(":")
    if kind == "configure" and days.isascii() and days.isdigit() and 0 < int(days) <= 3650:
        return {"option": "configure", "days": int(days)}
    raise ConfigError(f"viewer_banner: {value!r} is not never, always or configure:DAYS")


def branding_js(name: str, banner: str) -> str:
    """The script that sets the branding keys of ``window.config`` (run after it is defined)."""
    return _JS.format(banner=json.dumps(check_banner(banner)), name=json.dumps(name or "cubepacs"))
