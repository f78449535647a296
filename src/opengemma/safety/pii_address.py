"""STREET_ADDRESS: grammars of the postal formats of JP, CN, KR, BR/PT, NL, DE, FR, ES, IT, UK,
US (military APO/FPO/DPO included), with multi-line blocks and per-country postcode checks.

A street line (house number + street name + street type, in the order each language writes
them) is extended by a locality tail -- unit, district and city segments separated by commas or
line breaks, ending with a postcode -- when the postcode passes its country's check
(`postcode_ok`). Japanese (〒 postcode, prefecture, 丁目/番/号), Chinese (省/市/区 + 路/街 +
号) and Korean (시/도 + 구/군 + 로/길 + number) addresses have their own grammars.
"""

from __future__ import annotations

import re

from opengemma.safety.pii_base import HAS_DIGIT, UPPER, Finding, RuleDetector
from opengemma.safety.pii_scripts import script_addresses

# Street types: USPS Publication 28 suffixes (abridged) and common British street words.
_EN_SUFFIX = (
    "Alley|Avenue|Ave|Bend|Bluff|Boulevard|Blvd|Bridge|Brook|Burg|Bypass|Camp|Canyon|Cape|"
    "Causeway|Center|Circle|Cir|Cliff|Close|Club|Common|Corner|Course|Court|Ct|Cove|Creek|"
    "Crescent|Cres|Crest|Crossing|Crossroad|Curve|Dale|Dam|Divide|Drive|Dr|Estate|Expressway|"
    "Extension|Fall|Ferry|Field|Flat|Ford|Forest|Forge|Fork|Fort|Freeway|Garden|Gateway|Glen|"
    "Green|Grove|Harbor|Haven|Heights|Highway|Hwy|Hill|Hollow|Inlet|Island|Isle|Junction|Key|"
    "Knoll|Lake|Land|Landing|Lane|Ln|Light|Loaf|Lock|Lodge|Loop|Mall|Manor|Meadow|Mews|Mill|"
    "Mission|Motorway|Mount|Mountain|Neck|Orchard|Oval|Overpass|Parade|Park|Parkway|Pkwy|Pass|"
    "Passage|Path|Pike|Pine|Place|Pl|Plain|Plaza|Point|Port|Prairie|Radial|Ramp|Ranch|Rapid|"
    "Rest|Ridge|River|Road|Rd|Route|Row|Run|Shoal|Shore|Skyway|Spring|Spur|Square|Sq|Station|"
    "Stravenue|Stream|Street|St|Summit|Terrace|Throughway|Trace|Track|Trafficway|Trail|Tunnel|"
    "Turnpike|Underpass|Union|Valley|Viaduct|View|Village|Ville|Vista|Walk|Wall|Way|Well|Wharf|"
    "Marg|Nagar|Chowk"
)
_CAP = rf"(?:[{UPPER}][\w'’.-]*|\d{{1,3}}(?:st|nd|rd|th))"
_WORD = rf"[{UPPER}][\w'’.-]*"
_PARTICLES = r"(?:am|an|der|den|de|del|la|le|les|sur|sous|di|do|da|das|dos|im|in|upon|on|en|aan)"
# City words carry no full stop except in St. / Mt. (so "Torino. Il mio" ends at Torino).
_CWORD = rf"(?:(?:St|Ste|Sta|Sto|Mt|Ft|Kel|Kec|Kab|Ds)\.|[{UPPER}][\w'’-]*)"
_CITY = rf"{_CWORD}(?:[ \t]+(?:{_PARTICLES}[ \t]+){{0,2}}{_CWORD}){{0,3}}(?:[ \t]*/[ \t]*{_CWORD})?"
_SEP = (
    r"(?:[ \t]*,[ \t]*(?:\n[ \t]*)?|[ \t]*\n[ \t]*|[ \t]+-[ \t]+|[ \t]+in[ \t]+(?=\d)"
    r"|[ \t]*[•·|][ \t]*|[ \t]+(?=(?:[A-Z]{1,2}-)?\d{4,5}[ \t]+[A-Z]))"  # 12 rue X 75001 Paris
)
_UNIT = (
    r"(?i:apt\.?|apartment|apto\.?|suite|ste\.?|unit|flat|floor|fl\.?|room|rm\.?|piso|puerta"
    r"|bus|scala|interno|andar|sala|bloco|esc\.?)[ \t]*[\w-]+"
    r"|RT\.?[ \t]?\d{1,3}[ \t]?/[ \t]?RW\.?[ \t]?\d{1,3}"  # RT 03/RW 05 (ID)
    r"|\d{1,2}\.[ \t]?(?:th|tv|mf|sal)\.?|\d{1,2}\.?[º°ª][ \t]?(?:[A-Z]\b|"
    r"(?i:izq|izda|dcha|der|dto|esq|frente|fte)\.?)?|\#[ \t]?\d+"
)
# Postcodes by the form they are written in, checked by `postcode_ok`.
_POST_BEFORE_CITY = (
    r"(?:[1-9]\d{3}[ \t]?[A-Z]{2}|\d{5}-\d{3}|\d{4}-\d{3}|\d{2}-\d{3}|[1-8]\d{5}|\d{5}"
    r"|[1-9]\d{2}[ \t]\d{2}|\d{4})"
)
_US_STATE = r"(?:[A-Z]{2})"
_UK_POST = r"(?:[A-Z]{1,2}\d[A-Z\d]?[ \t]*\d[A-Z]{2})"
_POSTSEG = (
    rf"(?:(?:[A-Z]{{1,2}}-)?{_POST_BEFORE_CITY}[ \t]+{_CITY}"  # D-10115, CH-8001
    rf"|{_CITY},?[ \t]+(?:{_US_STATE}[ \t]+\d{{5}}(?:-\d{{4}})?|{_UK_POST}|{_POST_BEFORE_CITY})"
    rf"|{_CITY}(?:[ \t]+-[ \t]+|[ \t]*/[ \t]*)[A-Z]{{2}},?[ \t]+(?:CEP:?[ \t]*)?\d{{5}}-\d{{3}}"
    r"|CEP:?[ \t]*\d{5}-?\d{3}|[1-8]\d{5}(?!\d))"
)
_CITY_SEG = rf"{_CITY}(?:[ \t]*/[ \t]*[A-Z]{{2}})?"  # São Paulo/SP
_TAIL = re.compile(
    rf"(?:(?:{_SEP}|[ \t]+)(?:{_UNIT}))?(?:{_SEP}{_CITY_SEG}){{0,2}}?{_SEP}(?:{_POSTSEG})\b"
)
_UNIT_TAIL = re.compile(rf"{_SEP}(?:{_UNIT})")

_ROMANCE_OF = r"(?:de|del|de la|de los|de las|da|do|dos|das|di|della|dei|delle|degli)"
_STREETS = (
    # 1600 Amphitheatre Parkway / 250 West 57th Street / Flat 2, 17 Marlborough Gardens
    rf"\b(?:(?:Flat|Apartment|Unit|Suite)[ \t]+\w+,[ \t]+)?\d{{1,6}}[A-Za-z]?(?:[-/]\d{{1,4}})?,?"
    rf"[ \t]+(?:{_CAP}[ \t]+){{1,4}}?(?:{_EN_SUFFIX})s?\b\.?(?:[ \t]+(?:[NS][EW]?|[EW])\b\.?)?",
    # Studio 48x, Rita Squares / Flat 3, Fox Parks
    rf"\b(?:Flat|Studio|Apartment|Unit|Suite)[ \t]+\d{{1,5}}[A-Za-z]?,?\s+"
    rf"(?:{_CAP}[ \t]+){{1,3}}?(?:{_EN_SUFFIX})s?\b",
    # Hauptstraße 5 / Goethestr. 7 / Kerkstraat 12a / Agnes-Wesack-Straße 26-83
    rf"\b(?:{_CAP}[ -]){{0,3}}[{UPPER}][\w'-]*?(?i:stra(?:ß|ss)e|str\.|weg|gasse|platz|allee"
    r"|ring|damm|ufer|chaussee|steig|pfad|straat|laan|plein|gracht|kade|singel|dreef"
    r"|baan|hof|dijk|markt|steeg|boulevard|park|gatan|vägen|gränd|torget|stigen|backen|allén"
    r"|leden|gata|gate|gaten|gade|vej|veien|vegen|torv)[ \t]+\d{1,5}[a-zA-Z]?"
    r"(?:[-/](?:\d{1,4}[a-z]?|I{1,3}V?|hs|[A-Za-z]))?\b",  # Kerkstraat 12-II
    # Jl. Gatot Subroto No. 12 / Jalan Sudirman Kav. 52-53 (ID)
    rf"\b(?:Jl\.|Jln\.|Jalan|Gg\.|Gang)[ \t]+(?:{_CAP}[ \t]+){{0,4}}?{_CAP}"
    r"[ \t,]+(?:No\.?|Nomor|Kav\.?|Blok)[ \t]*[\dA-Z]{1,5}(?:[-/]\d{1,4})?",
    # ul. Marszałkowska 84/92 m. 15 (PL)
    rf"\b(?:ul\.|ulica|al\.|aleja|Aleje|pl\.|plac|os\.|osiedle)[ \t]+{_CAP}(?:[ \t]+{_CAP}){{0,3}}"
    r"[ \t]+\d{1,5}[a-zA-Z]?(?:/\d{1,4}[a-zA-Z]?)?(?:[ \t]+(?:m\.|lok\.)[ \t]*\d{1,4})?",
    # Şişli Mah. Halaskargazi Cad. No:15 D: 4 (TR)
    rf"\b(?:(?:{_CAP}[ \t]+){{1,3}}(?:Mahallesi|Mah\.|Mh\.)[ \t,]+)?(?:{_CAP}[ \t]+){{1,3}}"
    r"(?:Caddesi|Cad\.|Cd\.|Sokağı|Sokak|Sok\.|Sk\.|Bulvarı|Blv\.|Bulvar)[ \t,]*No[:.]?[ \t]*"
    r"\d{1,5}(?:/\d{1,4})?[A-Z]?(?:[ \t,]*(?:D|Daire|Kat)[:.]?[ \t]*\d{1,4})*",
    # 23, rue Victoire Perrier / 12 bis, avenue de la République
    r"(?:\b\d{1,5}(?:\s?(?:bis|ter))?,?[ \t]+(?i:rue|avenue|av\.|boulevard|bd|chemin|place"
    r"|impasse|all[ée]e|quai|route|cours|passage|square)|\b(?:rue|avenue|boulevard|chemin"
    r"|impasse|all[ée]e|quai))[ \t]+(?:(?:de|du|des|la|le|l'|d')"
    rf"[ \t]*)*{_CAP}(?:[ \t]+{_CAP}){{0,3}}",
    # Calle de Alcalá 145 / Via Roma, 12 / Rua das Laranjeiras, 245 / Piazza del Duomo 4
    r"\b(?:Calle|[Cc]/|C\.|Vial|Canale|Avenida|Avda\.?|Av\.|Paseo|Plaza|Pasaje|Camino|Carrera"
    r"|Ronda|Rambla|Cañada|Travesía|Urbanización|Acceso|Cuesta|Vía|Glorieta|Carretera|Callejón"
    r"|Via|Viale|Piazza|Piazzale|Corso|Vicolo|Largo|Strada|Contrada|Borgo|Rua|Travessa"
    rf"|Alameda|Praça|Largo|Estrada|Rodovia)[ \t]+(?:{_ROMANCE_OF}[ \t]+)?{_CAP}"
    rf"(?:[ \t]+(?:{_ROMANCE_OF}[ \t]+)?{_CAP}){{0,3}},?[ \t]+(?:n\.?[º°o]?\.?[ \t]*)?"
    r"\d{1,5}\b",
)
_STREET = re.compile("|".join(f"(?:{p})" for p in _STREETS))
# Am Kupfergraben 6a, 10117 Berlin: no street word, so only with a checked postcode tail.
# Damrak 1, 1012 LG Amsterdam / Zeil 106, 60313 Frankfurt: a street name without a street word,
# likewise only with a checked postcode tail. PO boxes in the languages covered, ditto.
_BARE = re.compile(
    r"\b(?:P\.?[ \t]?O\.?[ \t]?Box|Post Office Box|Postbus|Postfach|Apartado(?: de Correos)?"
    r"|Apdo\.?|Casella Postale|Caixa Postal|C\.P\.|B\.P\.|BP|Boîte Postale|Postboks|Box)"
    r"[ \t]+\d{1,6}(?:[ \t]\d{2}){0,3}\b"
    r"|\b(?:(?:Am|An der|An den|Auf der|Auf dem|Im|In der|Zum|Zur|Unter den)[ \t]+)?"
    rf"[{UPPER}][\w'’-]+(?:[ \t]+{_CAP}){{0,2}}[ \t]+\d{{1,4}}[a-zA-Z]?(?:[-/]\d{{1,4}})?\b"
)
_MILITARY = re.compile(
    rf"\b(?:(?:PSC|CMR|Unit)[ \t]+\d{{1,5}}(?:{_SEP}|[ \t]+)Box[ \t]+\d{{1,5}}"
    rf"|(?:USS|USNS|USCGC)[ \t]+{_WORD}(?:[ \t]+{_WORD}){{0,2}}"
    r"(?:[ \t]+\([A-Z]{2,4}[- ]?\d{1,4}\))?)"
    rf"(?:{_SEP}|[ \t]+)(?:APO|FPO|DPO)[ \t]+A[AEP][ \t]+\d{{5}}(?:-\d{{4}})?\b"
)
_KANJI = r"\u4e00-\u9fff"
_JP = re.compile(
    rf"(?:〒[ \t]?\d{{3}}-?\d{{4}}[ \t　]*)?(?:東京都|北海道|(?:京都|大阪)府|[{_KANJI}]{{2,3}}県"
    rf"|[{_KANJI}]{{1,4}}市(?=[{_KANJI}]{{1,3}}区))"
    rf"[{_KANJI}\u3040-\u30ffー\d]{{1,24}}?(?:(?:\d{{1,4}}|[一二三四五六七八九十]+)丁目"
    r"(?:[ \t]?\d{1,4}(?:番地?(?:[ \t]?\d{1,4}号?)?|[-−]\d{1,4}(?:[-−]\d{1,4})?))?"
    r"|\d{1,4}[-−]\d{1,4}(?:[-−]\d{1,4})?|\d{1,4}番地?(?:[ \t]?\d{1,4}号?)?)"
    rf"(?:[ \t　]?[{_KANJI}\u3040-\u30ffーA-Za-z]{{1,16}}?[ \t]?\d{{1,5}}(?:号室|階|F\b))?"
)
_ZH = re.compile(
    rf"(?:[{_KANJI}]{{2,4}}(?:省|自治区|自治區))?[{_KANJI}]{{2,4}}市[{_KANJI}]{{1,8}}?[区县區縣]"
    rf"[{_KANJI}]{{1,12}}?(?:路|街|道|巷|大道|胡同)(?:[一二三四五六七八九十\d]{{1,3}}段)?"
    rf"(?:\d{{1,5}}[巷弄])*\d{{1,5}}[号號](?:[{_KANJI}\d]{{0,10}}?[室楼层樓])?"
)
_ZH_LEAD = frozenset("请寄至送到往于在是为的址住我你他她您发邮")
_KO = re.compile(
    r"[가-힣]{2,6}(?:특별시|광역시|특별자치시|특별자치도|도)(?:[ \t]+[가-힣]{1,6}(?:시|군|구)){1,2}"
    r"(?:[ \t]+[가-힣]{1,8}(?:읍|면|동))?[ \t]+[가-힣0-9]{1,12}(?:로|길)[ \t]?\d{1,5}(?:-\d{1,5})?"
)

_US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH "
    "NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP AA AE AP".split()
)
_BR_STATES = frozenset(
    "AC AL AP AM BA CE DF ES GO MA MT MS MG PA PB PR PE PI RJ RN RS RO RR SC SP SE TO".split()
)


def postcode_ok(code: str, state: str | None = None) -> bool:
    """The checks a postcode's form allows: US state + ZIP, UK outward/inward letters,
    NL 1000-9999 + letters (not SA/SD/SS), BR CEP + state, PT 1000-9999, 5-digit (DE, FR,
    ES, IT) and 4-digit (AT, BE, CH, DK) ranges."""
    code = code.strip()
    if re.fullmatch(r"[1-9]\d{3}[ \t]?[A-Z]{2}", code):
        return code[-2:] not in ("SA", "SD", "SS")
    if re.fullmatch(r"\d{5}-\d{3}", code):
        return code[:5] != "00000" and (state is None or state in _BR_STATES)
    if re.fullmatch(r"\d{4}-\d{3}", code):
        return code[0] != "0"
    if re.fullmatch(r"\d{5}(?:-\d{4})?", code):
        return code[:5] != "00000" and (state is None or state in _US_STATES)
    if re.fullmatch(r"\d{4}", code):
        return code[0] != "0"
    if re.fullmatch(r"\d{2}-\d{3}", code):  # PL
        return True
    if re.fullmatch(r"\d{3}[ \t]\d{2}", code):  # SE
        return code[0] != "0"
    if re.fullmatch(r"\d{6}", code):  # IN PIN: zones 1-8
        return code[0] in "12345678"
    m = re.fullmatch(r"([A-Z]{1,2})\d[A-Z\d]?[ \t]*\d([A-Z]{2})", code)
    return bool(m) and not set(m[2]) & set("CIKMOV") and m[1][0] not in "QVX"


def _tail_ok(tail: str) -> bool:
    """The postcode at the end (or start of the last segment) of a tail passes its check."""
    last = re.split(r"[,\n•·|]|[ \t]-[ \t]|[ \t]in[ \t]", tail.rstrip())[-1].strip()
    last = re.sub(r"^[A-Z]{1,2}-(?=\d)", "", last)  # D-10115 Berlin, CH-8001 Zürich
    m = re.search(r"\b([A-Z]{2})[ \t]+(\d{5}(?:-\d{4})?)$", tail)
    if m:
        return postcode_ok(m[2], m[1])
    m = re.search(r"\b([A-Z]{2}),?[ \t]+(\d{5}-\d{3})$", tail)
    if m:
        return postcode_ok(m[2], m[1])
    m = re.search(rf"{_UK_POST}$", tail) or re.match(_POST_BEFORE_CITY, last)
    if m is None:
        m = re.search(rf"{_POST_BEFORE_CITY}$", tail)
    return m is not None and postcode_ok(m.group())


class StreetAddressDetector(RuleDetector):
    """Street lines with their locality tails, military addresses, JP/CN/KR addresses."""

    name, types = "street-grammar", frozenset({"STREET_ADDRESS"})

    def find(self, text: str, field: str) -> list[Finding]:
        if not HAS_DIGIT.search(text):
            return []
        out = []
        for pattern, needs_tail in ((_STREET, False), (_BARE, True)):
            for m in pattern.finditer(text):
                end = self._extend(text, m.end())
                if end > m.end() or not needs_tail:
                    out.append(self._hit(m.start(), end, 0.8 if end > m.end() else 0.7))
        out += [self._hit(s, e, 0.7) for s, e in script_addresses(text)]
        for pattern in (_MILITARY, _JP, _KO):
            out += [self._hit(m.start(), m.end(), 0.8) for m in pattern.finditer(text)]
        for m in _ZH.finditer(text):
            start = m.start()
            while text[start] in _ZH_LEAD and _ZH.fullmatch(text, start + 1, m.end()):
                start += 1  # 寄至北京市...: the verb before the city is not the address
            out.append(self._hit(start, m.end(), 0.8))
        return out

    @staticmethod
    def _extend(text: str, end: int) -> int:
        """End of the locality tail after a street line (checked postcode), else of its unit."""
        m = _TAIL.match(text, end)
        if m and _tail_ok(m.group()):
            return m.end()
        m = _UNIT_TAIL.match(text, end)
        return m.end() if m else end
