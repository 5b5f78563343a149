"""Languages: every string of every page in French and Portuguese, per user; the reasons
stored in English shown in the reader's language; dates and numbers localised."""

from __future__ import annotations

import ast
import io
import re
import shutil
import threading
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from flask_babel import force_locale
from helpers import FUNDUS_DIR, TESTS, csrf_from, testdata

import appliance
from appliance.config import load_config, save_settings
from appliance.errors import IngestError
from appliance.ingest import raster
from appliance.ingest.importer import Importer
from appliance.ingest.usb import UsbWatcher
from appliance.screening import gate, quality
from appliance.screening.pipeline import Screener
from appliance.store import users
from appliance.store.reviews import add_review
from appliance.web import create_app
from appliance.web.reasons import BODY_PARTS, known_msgid, translate_reason
from appliance.worker import Worker

WEB = Path(appliance.__file__).parent / "web"
TRANSLATIONS = WEB / "translations"
LANGS = ("fr", "pt")
PIN = "2468"
TZ = "Africa/Maputo"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


# -- catalogs --------------------------------------------------------------------------


def extracted_msgids() -> set:
    """What the sources ask to translate now, found as scripts/i18n extract finds it."""
    with open(WEB / "babel.cfg") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    keywords = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}
    found = extract_from_dir(WEB.parent, method_map, options_map, keywords=keywords)
    return {message for _file, _line, message, _comments, _context in found}


def catalog(lang: str):
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po", "rb") as fh:
        return read_po(fh, locale=lang)


@pytest.fixture(scope="module")
def msgids() -> set:
    return extracted_msgids()


def test_the_template_lists_every_string_the_sources_use(msgids):
    with open(TRANSLATIONS / "messages.pot", "rb") as fh:
        template = {m.id for m in read_po(fh) if m.id}
    assert msgids - template == set(), "run scripts/i18n update, then translate"
    assert len(msgids) > 200  # the extraction really read the templates and modules


@pytest.mark.parametrize("lang", LANGS)
def test_every_string_is_translated_and_not_fuzzy(lang, msgids):
    cat = catalog(lang)
    assert not cat.fuzzy
    problems = []
    for msgid in sorted(msgids, key=str):
        message = cat.get(msgid)
        strings = message.string if message is not None else ""
        strings = strings if isinstance(strings, tuple) else (strings,)
        if message is None:
            problems.append(f"missing: {msgid!r}")
        elif message.fuzzy:
            problems.append(f"fuzzy: {msgid!r}")
        elif not all(s.strip() for s in strings):
            problems.append(f"empty: {msgid!r}")
    # Placeholders: a translation must use exactly the msgid's %(name)s.
    problems += [f"{m.id!r}: {e}" for m, errors in cat.check() for e in errors]
    assert not problems, f"{lang}: scripts/i18n update, then translate:\n" + "\n".join(problems)


@pytest.mark.parametrize("lang", LANGS)
def test_the_committed_mo_files_match_the_po_files(lang):
    po = catalog(lang)
    compiled = io.BytesIO()
    write_mo(compiled, po)
    compiled.seek(0)
    with open(TRANSLATIONS / lang / "LC_MESSAGES" / "messages.mo", "rb") as fh:
        committed = read_mo(fh)

    def contents(cat) -> dict:
        def frozen(value):
            return tuple(value) if isinstance(value, (list, tuple)) else value

        return {frozen(m.id): frozen(m.string) for m in cat if m.id}

    assert contents(committed) == contents(read_mo(compiled)), "run scripts/i18n compile"
    assert committed.plural_forms == po.plural_forms


# -- reasons stored in English ---------------------------------------------------------


def test_every_refusal_the_gate_gives_is_known():
    decisions = [gate.expectation_from_tags({"modality": m})[1] for m in gate.NOT_PROJECTION_XRAY]
    decisions += [
        gate.expectation_from_tags({"modality": "DX", "body_part": "HAND"})[1],
        gate.expectation_from_tags({"modality": "CR", "view_position": "LL"})[1],
        gate.decide({"chest_xray": 0.4, "fundus_photo": 0.3, "other": 0.3}, {}, 0.9),
        gate.decide({"chest_xray": 0.01, "fundus_photo": 0.01, "other": 0.98}, {}, 0.5),
        gate.decide(
            {"chest_xray": 0.01, "fundus_photo": 0.98, "other": 0.01}, {"modality": "DX"}, 0.5
        ),
        gate.decide(
            {"chest_xray": 0.98, "fundus_photo": 0.01, "other": 0.01}, {"modality": "OP"}, 0.5
        ),
    ]
    texts = [d.reason for d in decisions] + [h for d in decisions for h in d.hints]
    assert all(d.route == gate.REFUSED for d in decisions)
    texts += list(quality.MESSAGES.values())
    texts += ["Photo not gradable: " + m for m in quality.MESSAGES.values()]  # pipeline.py
    assert [t for t in texts if known_msgid(t) is None] == []


SOURCES = [
    "ingest/sniff.py",
    "ingest/dicom.py",
    "ingest/headers.py",
    "ingest/raster.py",
    "ingest/decode.py",
    "ingest/importer.py",
    "ingest/sources.py",
    "ingest/usb.py",
    "ingest/hotfolder.py",
    "ingest/sandbox.py",
    "store/users.py",
    "store/reviews.py",
    "store/patients.py",
    "store/population.py",
    "screening/population.py",
    "monitoring/outcomes.py",
    "monitoring/notices.py",
    "monitoring/calibration.py",
    "monitoring/monitor.py",
]


def sentences_in(path: Path) -> list[str]:
    """Every sentence-like string literal of a module (f-strings with 7 for each value)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    inside_fstrings = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in docstrings or id(node) in inside_fstrings:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            found.append(
                "".join(p.value if isinstance(p, ast.Constant) else "7" for p in node.values)
            )
    return [s for s in found if re.fullmatch(r"[A-Z][^\n]* [^\n]*\.", s)]


@pytest.mark.parametrize("source", SOURCES)
def test_every_reason_written_by_the_package_is_known(source):
    sentences = sentences_in(Path(appliance.__file__).parent / source)
    assert sentences, source
    assert [s for s in sentences if known_msgid(s) is None] == []


def test_size_reasons_with_numbers_are_known():
    png = cv2.imencode(".png", np.zeros((8, 9), np.uint8))[1].tobytes()
    for max_pixels in (10, 10**6):  # far too large, then too small
        with pytest.raises(IngestError) as caught:
            raster.check_raster(png, "png", max_pixels)
        assert known_msgid(caught.value.reason) is not None, caught.value.reason


def test_english_pages_show_the_stored_text_and_unknown_text_passes_through(tmp_path):
    app = create_app(load_config(tmp_path / "data", environ={}, usb_roots=[]))
    stored = [
        "The image is only 8 × 9 pixels: too small.",
        "Not a chest X-ray: this X-ray is of the knee.",
        "Photo not gradable: " + quality.MESSAGES["focus"],
        "A reason a later version wrote.",
    ]
    with app.test_request_context():
        assert [translate_reason(text) for text in stored] == stored
        with force_locale("fr"):
            assert translate_reason(stored[2]) == (
                "Photo inexploitable : Image floue : nettoyez l'objectif, faites la mise au "
                "point et reprenez la photo."
            )
            assert translate_reason(stored[1]) == (
                "Ce n'est pas une radiographie du thorax (région examinée : genou)."
            )
            assert translate_reason(stored[3]) == stored[3]
    app.extensions["appliance_store"].close()


# -- pages -----------------------------------------------------------------------------


class VisibleText(HTMLParser):
    """The words a person sees (and hears: alt and aria-label), not markup or scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.hidden += 1
        self.parts += [v for k, v in attrs if k in ("alt", "title", "aria-label") and v]

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def visible(html: str) -> str:
    parser = VisibleText()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def english_phrases(msgids: set) -> set[str]:
    """Runs of 3+ words from the English msgids (the text around any placeholder)."""
    phrases = set()
    for msgid in msgids:
        for text in msgid if isinstance(msgid, tuple) else (msgid,):
            for chunk in re.split(r"%\(\w+\)s", text):
                chunk = " ".join(chunk.split()).strip(" :;,.·—()")
                if len(chunk.split()) >= 3:
                    phrases.add(chunk)
    return phrases


@pytest.fixture(scope="module")
def site(tmp_path_factory, models):
    """A box with screened images (chest, eye, a refused CT), a review, a refused PDF,
    a USB stick, and an admin per language."""
    root = tmp_path_factory.mktemp("i18n")
    stick = root / "usb" / "CAMERA"
    stick.mkdir(parents=True)
    shutil.copy(FUNDUS_DIR / "hrf_12_h.jpg", stick / "IMG_0001.JPG")
    (stick / "notes.txt").write_text("follow-up list\n")
    config = load_config(
        root / "data",
        environ={},
        usb_roots=[str(root / "usb")],
        usb_require_mountpoint=False,
        usb_auto_import=False,
        min_free_mb=1,
        timezone=TZ,
    )
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    ids = {
        "fundus": importer.import_path(FUNDUS_DIR / "hrf_12_h.jpg", source="usb").image_id,
        "chest": importer.import_path(testdata("RG1_J2KI.dcm"), source="dicom").image_id,
        "ct": importer.import_path(testdata("CT_small.dcm"), source="dicom").image_id,
    }
    importer.import_bytes(PDF, source="upload", original_name="letter.pdf")
    Worker(store, config, Screener(models, config), name="t").drain()
    # A chest X-ray without an age, where the site asks: its page offers the choice.
    png = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
    ids["waiting"] = importer.import_path(png, source="usb").image_id
    asking = config.with_overrides(chest_population="ask")
    Worker(store, asking, Screener(models, asking), name="t").drain()
    # A photo whose screening failed (its original gone for a while): its page says so,
    # and the System page offers to retry.
    ids["failed"] = importer.import_path(FUNDUS_DIR / "hrf_07_h.jpg", source="usb").image_id
    stored = store.conn().execute("SELECT stored_path FROM images WHERE id=?", (ids["failed"],))
    original = config.data_dir / stored.fetchone()[0]
    kept = original.read_bytes()
    original.unlink()
    once = config.with_overrides(job_max_attempts=1)
    Worker(store, once, Screener(models, once), name="t").drain()
    original.write_bytes(kept)
    UsbWatcher(importer, threading.Event()).poll_once()
    admins = {
        lang: users.create_user(store, f"admin_{lang}", PIN, "admin", lang)
        for lang in ("en", *LANGS)
    }
    add_review(
        store,
        image_id=ids["chest"],
        user=users.get_user(store, admins["en"]),
        verdict="disagree",
        reasons=["false_alarm"],
        note="",
    )
    yield app, ids
    store.close()


def client_for(app, lang: str):
    client = app.test_client()
    token = csrf_from(client.get("/login").text)
    response = client.post(
        "/login", data={"csrf_token": token, "username": f"admin_{lang}", "pin": PIN}
    )
    assert response.status_code == 302, response.text
    return client


def page_text(client, url: str, lang: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    assert f'<html lang="{lang}">' in response.text, url
    return visible(response.text)


def pages(ids: dict) -> list[str]:
    return [
        "/",
        "/?filter=refused",
        *(f"/study/{i}" for i in ids.values()),
        # A slip only for what was screened: a refusal has none (its page gives advice).
        *(f"/study/{ids[k]}/slip" for k in ("chest", "fundus")),
        "/import/",
        "/import/volume/1",
        "/settings",
        "/users",
        "/system",
        "/calibration",
        "/calibration?model=fundus-referable-dr",
    ]


@pytest.mark.parametrize("lang", LANGS)
def test_no_english_sentence_on_any_page(site, msgids, lang):
    app, ids = site
    phrases = english_phrases(msgids)
    client = client_for(app, lang)
    seen = {}
    for url in pages(ids):
        text = page_text(client, url, lang)
        seen[url] = sorted(p for p in phrases if p in text)
    config = app.config["APPLIANCE"]
    save_settings(config, {"language": lang}, environ={})  # the login page: the site's
    try:
        text = page_text(app.test_client(), "/login", lang)
        seen["/login"] = sorted(p for p in phrases if p in text)
    finally:
        save_settings(config, {"language": "en"}, environ={})
    assert {url: found for url, found in seen.items() if found} == {}


@pytest.mark.parametrize("lang", LANGS)
def test_no_stored_english_value_on_any_page(site, lang):
    """What the devices and the box stored in English (a DICOM body part such as CHEST,
    a backend's name, a source) is shown in the reader's words."""
    app, ids = site
    client = client_for(app, lang)
    stored = set(BODY_PARTS) | {"onnxruntime", "Uploaded", "Sent by", "USB stick"}
    seen = {}
    for url in pages(ids):
        text = page_text(client, url, lang)
        seen[url] = sorted(w for w in stored if re.search(rf"\b{re.escape(w)}\b", text))
    assert {url: found for url, found in seen.items() if found} == {}
    study = page_text(client, f"/study/{ids['chest']}", lang)
    assert {"fr": "Thorax", "pt": "Tórax"}[lang] in study  # RG1's BodyPartExamined CHEST


def test_the_language_is_each_users_own(site):
    app, _ids = site
    texts = {lang: page_text(client_for(app, lang), "/", lang) for lang in ("en", *LANGS)}
    assert "Decision support — not a diagnosis." in texts["en"]
    assert "Aide à la décision — pas un diagnostic." in texts["fr"]
    assert "Apoio à decisão — não é um diagnóstico." in texts["pt"]
    assert "Worklist" in texts["en"] and "Liste de travail" in texts["fr"]
    assert "Lista de trabalho" in texts["pt"]


def test_error_pages_are_translated(site):
    app, _ids = site
    client = client_for(app, "fr")
    missing = client.get("/study/999")
    assert missing.status_code == 404
    assert "Cette page ou cette image n'existe pas." in visible(missing.text)
    forged = client.post("/import/scan", data={"csrf_token": "forged"})
    assert forged.status_code == 400
    assert "Le formulaire a expiré." in visible(forged.text)


def test_a_refused_ct_shows_its_reason_in_french(site):
    app, ids = site
    client = client_for(app, "fr")
    study = page_text(client, f"/study/{ids['ct']}", "fr")
    assert "C'est un scanner (tomodensitométrie), et non une radiographie" in study
    assert "Envoyez une radiographie du thorax de face (PA ou AP)" in study  # the hint
    assert "This is a CT scan" not in study
    assert "Fiche d'orientation" not in study  # no referral slip for a refusal
    assert client.get(f"/study/{ids['ct']}/slip").status_code == 404
    imports = page_text(client, "/import/", "fr")
    assert "C'est un document PDF, pas une image." in imports  # the quarantine list
    assert "1 image, 1 autre fichier" in imports  # plural forms
    volume = page_text(client, "/import/volume/1", "fr")
    assert "notes.txt — C'est un fichier texte, pas une image." in volume


def test_an_upload_refused_is_flashed_in_portuguese(site):
    app, _ids = site
    client = client_for(app, "pt")
    token = csrf_from(client.get("/import/").text)
    response = client.post(
        "/import/upload",
        data={"csrf_token": token, "file": [(io.BytesIO(PDF), "carta.pdf")]},
        content_type="multipart/form-data",
    )
    assert (
        "carta.pdf recusado: não é uma imagem que o aparelho consiga analisar (uma cópia é"
        " guardada para o técnico) Isto é um documento PDF, não uma imagem."
    ) in visible(response.text)


def test_dates_and_numbers_are_localised(site):
    app, ids = site
    store = app.extensions["appliance_store"]
    received = (
        store.conn()
        .execute("SELECT received_at FROM images WHERE id=?", (ids["chest"],))
        .fetchone()[0]
    )
    local = datetime.fromisoformat(received).astimezone(ZoneInfo(TZ))
    fr = client_for(app, "fr")
    assert local.strftime("%d/%m/%Y %H:%M") in page_text(fr, "/", "fr")  # 28/11/2026 14:05
    # The slip's DICOM study date (20040826), in the clinic's date style (day/month/year).
    assert "Radiographie du thorax · 26/08/2004" in page_text(
        fr, f"/study/{ids['chest']}/slip", "fr"
    )
    settings = page_text(fr, "/settings", "fr")
    # Decimal comma, and French spacing before the percent sign.
    assert re.search(r"seuil 0,\d\d : sensibilité \d+\s%, spécificité \d+\s%", settings)
    en = page_text(client_for(app, "en"), "/settings", "en")
    assert re.search(r"threshold 0\.\d\d: sensitivity \d+%, specificity \d+%", en)
    pt = page_text(client_for(app, "pt"), "/", "pt")
    assert local.strftime("%d/%m/%Y %H:%M") in pt  # 28/11/2026 14:05: one style, every language


def test_adult_or_child_and_the_model_that_scored_in_french_and_portuguese(site):
    app, ids = site
    fr = client_for(app, "fr")
    waiting = page_text(fr, f"/study/{ids['waiting']}", "fr")
    assert "Adulte ou enfant ?" in waiting
    assert "Adulte (16 ans ou plus)" in waiting and "Enfant (moins de 16 ans)" in waiting
    assert "adulte ou enfant ?" in page_text(fr, "/", "fr")  # the worklist's status
    chest = page_text(fr, f"/study/{ids['chest']}", "fr")
    assert "Score donné par le modèle de radiographie du thorax adulte." in chest
    assert "cxr-adult-abnormal" not in chest.split("Détails")[0]  # for the clinician only
    pt = client_for(app, "pt")
    slip = page_text(pt, f"/study/{ids['chest']}/slip", "pt")
    assert "Pontuação dada pelo modelo de radiografia do tórax de adultos" in slip
    assert "Analisada como adulto: a radiografia indica a idade do paciente" in slip
