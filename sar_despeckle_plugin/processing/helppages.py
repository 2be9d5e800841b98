"""Each algorithm's icon and its bundled HTML help page (``helpUrl()``).

The pages in ``sar_despeckle_plugin/help/<algorithm>.html`` are generated from the algorithms
themselves (title, what it is for, the help text, the parameter and output tables, a
``qgis_process`` call) by ``python -m sar_despeckle_plugin.processing.helppages`` (``make
help-pages``) and shipped with the plugin; a test checks that they are up to date.
"""
from __future__ import annotations

import html
import os
import sys

from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QIcon

from .compat import ADVANCED, OPTIONAL

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ICON_DIR = os.path.join(PLUGIN_DIR, "icons")
HELP_DIR = os.path.join(PLUGIN_DIR, "help")


def help_page(name: str) -> str:
    return os.path.join(HELP_DIR, f"{name}.html")


class Branded:
    """Mixin for the provider's algorithms: ``ICON`` (a file of ``icons/``) and the bundled help page."""

    ICON = "despeckle.svg"

    def icon(self):
        return QIcon(self.svgIconPath())

    def svgIconPath(self):  # noqa: N802 (QGIS API)
        return os.path.join(ICON_DIR, self.ICON)

    def helpUrl(self):  # noqa: N802 (QGIS API)
        path = help_page(self.name())
        return QUrl.fromLocalFile(path).toString() if os.path.exists(path) else ""


def _type_of(param) -> str:
    kind = param.type()
    if kind == "enum":
        return "enum: " + ", ".join(f"{i} = {html.escape(o)}" for i, o in enumerate(param.options()))
    return {"raster": "raster layer", "rasterDestination": "raster (output)", "fileDestination": "file (output)",
            "sink": "vector layer (output)", "source": "vector layer", "number": "number", "band": "band number",
            "boolean": "boolean", "file": "file", "multilayer": "layers", "string": "text"}.get(kind, kind)


def render_page(alg) -> str:
    """The HTML page of an algorithm (deterministic: no date, no path)."""
    rows = []
    for p in alg.parameterDefinitions():
        default = p.defaultValue()
        flags = []
        if p.flags() & OPTIONAL:
            flags.append("optional")
        if p.flags() & ADVANCED:
            flags.append("advanced")
        rows.append(f"<tr><td><code>{html.escape(p.name())}</code></td><td>{html.escape(p.description())}"
                    f"{'<br><i>' + html.escape(p.help()) + '</i>' if p.help() else ''}</td>"
                    f"<td>{_type_of(p)}</td><td>{'' if default is None else html.escape(str(default))}</td>"
                    f"<td>{', '.join(flags)}</td></tr>")
    outs = [f"<tr><td><code>{html.escape(o.name())}</code></td><td>{html.escape(o.description())}</td></tr>"
            for o in alg.outputDefinitions()]
    # what a call must give: the inputs without a default, and the outputs
    required = [p for p in alg.parameterDefinitions()
                if not p.flags() & OPTIONAL and (p.defaultValue() is None or p.isDestination())]
    example = " ".join(f"{p.name()}=..." for p in required)
    return "\n".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(alg.displayName())}</title><style>",
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:2px 8px;text-align:left;vertical-align:top}th{background:#eee}",
        "</style></head><body>",
        f"<h1>{html.escape(alg.displayName())}</h1>",
        f"<p>Algorithm id <code>{html.escape(alg.id())}</code>, group <i>{html.escape(alg.group())}</i> of the "
        "<i>SAR despeckling</i> provider (sar-despeckle QGIS plugin).</p>",
        alg.shortHelpString(),
        "<h2>Parameters</h2><table><tr><th>name</th><th>description</th><th>type</th><th>default</th>"
        "<th></th></tr>", *rows, "</table>",
        "<h2>Outputs</h2><table><tr><th>name</th><th>description</th></tr>", *outs, "</table>",
        "<h2>Headless</h2>",
        f"<pre>qgis_process.bin run {html.escape(alg.id())} -- {html.escape(example)}</pre>",
        "<p>Add <code>--json</code> before <code>run</code> for machine-readable results; "
        f"<code>qgis_process.bin help {html.escape(alg.id())}</code> lists the parameters.</p>",
        "</body></html>", ""])


def write_pages(provider, folder: str = HELP_DIR) -> list:
    os.makedirs(folder, exist_ok=True)
    written = []
    for alg in provider.algorithms():
        if not isinstance(alg, Branded):
            continue
        path = os.path.join(folder, f"{alg.name()}.html")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(render_page(alg))
        written.append(path)
    return written


def main() -> int:  # pragma: no cover - run by `make help-pages`
    from qgis.core import QgsApplication
    app = QgsApplication([], False)
    app.initQgis()
    from . import helppages  # this module under its package name (run as __main__, its classes differ)
    from .provider import SarDespeckleProvider
    provider = SarDespeckleProvider(load_examples=False)
    QgsApplication.processingRegistry().addProvider(provider)
    for path in helppages.write_pages(provider):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
