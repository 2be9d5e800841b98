"""Every algorithm has its own icon and a bundled HTML help page (helpUrl), kept up to date."""
import xml.dom.minidom
from pathlib import Path

from qgis.PyQt.QtCore import QUrl

from sar_despeckle_plugin.processing.helppages import HELP_DIR, render_page


def algorithms(provider):
    return [a for a in provider.algorithms() if a.name() != "despeckleandcompare"]


def test_help_pages_exist_are_linked_and_up_to_date(provider):
    algs = algorithms(provider)
    assert len(algs) >= 10
    for alg in algs:
        url = alg.helpUrl()
        path = Path(QUrl(url).toLocalFile())
        assert url.startswith("file://") and path.parent == Path(HELP_DIR) and path.name == f"{alg.name()}.html"
        text = path.read_text(encoding="utf-8")
        # regenerate with `make help-pages` when this fails
        assert text == render_page(alg), f"{path.name} is out of date: run make help-pages"
        assert f"<code>{alg.id()}</code>" in text and alg.shortHelpString() in text
        for p in alg.parameterDefinitions():
            assert f"<code>{p.name()}</code>" in text
    assert sorted(p.name for p in Path(HELP_DIR).glob("*.html")) == sorted(f"{a.name()}.html" for a in algs)


def test_each_algorithm_has_an_svg_icon_by_kind(provider):
    icons = {}
    for alg in algorithms(provider):
        path = Path(alg.svgIconPath())
        assert path.exists(), alg.name()
        xml.dom.minidom.parse(str(path))                  # well-formed SVG
        assert not alg.icon().isNull()
        icons[alg.name()] = path.name
    assert icons["despeckle"] != icons["despecklepolsar"] != icons["despeckletimeseries"]
    assert icons["classicalfilter"] == icons["classicalfilterpolsar"] != icons["despeckle"]
    assert icons["explain"] != icons["assessment"] != icons["runtimeinfo"]
    assert len(set(icons.values())) == 8
