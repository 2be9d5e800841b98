"""Every algorithm's help renders as written (no stray '<' that Qt's rich text would take for a
tag and cut the text at) and numbers of looks show with 2 decimals, not 1.000000."""
import re

import pytest


def algorithms():
    from qgis.core import QgsApplication
    return [a for a in QgsApplication.processingRegistry().algorithms() if a.provider().id() == "sardespeckle"]


def test_help_has_no_stray_angle_brackets(provider):
    algs = algorithms()
    assert len(algs) >= 10
    for alg in algs:
        text = alg.shortHelpString() or ""
        stray = re.findall(r"<(?![a-zA-Z/!])", text)
        assert not stray, (alg.id(), text[text.index("<" + stray[0][1:]) - 40:][:80] if stray else "")
        # every tag that opens is a tag Qt's rich text knows
        tags = {t.lower() for t in re.findall(r"</?([a-zA-Z0-9]+)", text)}
        assert tags <= {"html", "head", "body", "p", "h2", "h3", "ul", "li", "b", "i", "code", "br", "a", "table",
                        "tr", "td", "th", "sub", "sup", "em", "strong"}, (alg.id(), tags)


@pytest.mark.parametrize("alg_id", ["sardespeckle:despeckle", "sardespeckle:despeckletimeseries",
                                    "sardespeckle:classicalfilter", "sardespeckle:classicalfilterpolsar",
                                    "sardespeckle:despecklepolsar", "sardespeckle:assessment"])
def test_looks_show_two_decimals(provider, alg_id):
    from qgis.core import QgsApplication
    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    meta = alg.parameterDefinition("LOOKS").metadata()
    assert meta["widget_wrapper"]["decimals"] == 2
