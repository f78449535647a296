"""PERSON in Japanese, Chinese and Korean text, chosen per span by script.

- Japanese (text with kana, or with words only Japanese writes: 様, 氏名, 〒,
  丁目): the morphological analyser MeCab through `fugashi` with the `unidic-lite`
  dictionary; consecutive tokens tagged 固有名詞/人名 (surname 姓, given name 名)
  form one name. A lone surname or given name counts when an honorific (様, さん,
  氏, 先生...) or a cue (氏名, 担当, 名前) sits next to it.
- Chinese (a Han run without kana): `jieba`'s part-of-speech tagger, tag `nr` (person name),
  kept when the name starts with one of the common Chinese surnames.
- Korean (Hangul): a rule -- a common surname syllable + one to three syllables next to an
  honorific or title (님, 씨, 고객님, 드림...) or after a cue (이름, 성명, 저는).

The analysers are optional packages (`pip install fugashi unidic-lite jieba`, in the `scrub`
extra); a missing one raises `PIIError` with that command.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from opengemma.safety.pii_base import Finding, PIIError, RuleDetector

_HAN_KANA = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff々〆ヵヶー・ 　]+")
_KANA = re.compile(r"[\u3040-\u30ff]")
_JP_HONORIFIC = ("様", "さま", "さん", "氏", "君", "くん", "ちゃん", "先生", "殿", "です", "と申")
# Characters and words only Japanese writes (a kanji-only Japanese text still has them).
_JP_MARKERS = ("様", "氏名", "担当", "〒", "丁目", "株式会社", "円", "電話", "住所")
_JP_CUE = ("氏名", "名前", "担当", "署名", "宛名", "差出人")
# The hundred or so most common Chinese surnames (single characters) and the compound ones.
_ZH_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏"
    "吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱"
    "严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁"
    "尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时"
    "穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾"
    "隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
)
_ZH_COMPOUND = ("欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "令狐", "慕容", "尉迟", "长孙")
_KO_SURNAMES = (
    "김이박최정강조윤장임한오서신권황안송류전홍고문양손배백허유남심노하곽성차주우구민진나엄채원천방공"
    "현함변염여추도소석선설마길연위표명기반왕금옥육인맹제모탁국어은편용예경봉사부"
)
_KO_NAME = re.compile(
    rf"(?<![가-힣])(?P<name>[{_KO_SURNAMES}][가-힣]{{1,3}}?)(?=[ \t]?(?:님|씨|고객님|선생님|교수님"
    r"|드림|올림|입니다|이에요|예요|께서|과장|대리|부장|사장|팀장|대표))"
)
_KO_CUE = re.compile(
    r"(?:이름|성명|저는|제 이름은|담당자?)[ \t]*[:：]?[ \t]*"
    rf"(?P<name>[{_KO_SURNAMES}][가-힣]{{1,3}})"
    r"(?=[이가은는을를의이고, \t\n]|$)"
)


# Words that start with a surname syllable and stand before honorifics: not names.
_KO_NOT_NAMES = frozenset(
    "고객 선생 교수 사장 부장 과장 대리 대표 이사 회장 여러분 우리 이분 저희 주인 손님 기사 부모 "
    "어머 아버 이모 고모 삼촌 사모 원장 실장 차장 팀장 소장 국장 의사 간호 학생 신부 수녀 목사 "
    "이웃 문의 안녕 감사 주문 고맙 부탁".split()
)


@lru_cache(maxsize=1)
def _fugashi() -> Any:
    try:
        import fugashi

        return fugashi.Tagger()
    except (ImportError, RuntimeError) as exc:
        raise PIIError(
            f"Japanese names need MeCab: pip install fugashi unidic-lite ({type(exc).__name__})"
        ) from None


@lru_cache(maxsize=1)
def _jieba() -> Any:
    try:
        import jieba
        import jieba.posseg
    except ImportError:
        raise PIIError("Chinese names need jieba: pip install jieba") from None
    jieba.setLogLevel(60)
    jieba.initialize()
    return jieba.posseg


class CjkPersonDetector(RuleDetector):
    """PERSON in Japanese, Chinese and Korean text (see the module docstring)."""

    name, types, kind = "cjk-names", frozenset({"PERSON"}), "morphology+rules"

    def __init__(self) -> None:
        self._ja = _fugashi()
        self._zh = _jieba()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"analysers": ["fugashi+unidic-lite", "jieba"]}

    def find(self, text: str, field: str) -> list[Finding]:
        out: list[Finding] = []
        if any("\uac00" <= c <= "\ud7a3" for c in text):
            out += self._korean(text)
        if not any("\u4e00" <= c <= "\u9fff" or "\u3040" <= c <= "\u30ff" for c in text):
            return out
        japanese = bool(_KANA.search(text)) or any(w in text for w in _JP_MARKERS)
        for m in _HAN_KANA.finditer(text):
            run = m.group()
            if not any("\u4e00" <= c <= "\u9fff" for c in run):
                continue
            ctx = text[max(0, m.start() - 6) : m.end() + 6]
            if japanese or _KANA.search(ctx):
                out += self._japanese(text, m.start(), run)
            else:
                out += self._chinese(m.start(), run)
        return out

    def _japanese(self, text: str, off: int, run: str) -> list[Finding]:
        out, pos, cur = [], 0, None  # cur: [start, end, n_tokens]
        tokens = []
        for w in self._ja(run):
            start = run.find(w.surface, pos)
            pos = start + len(w.surface)
            tokens.append((start, pos, w.feature.pos3 == "人名"))
        for start, end, is_name in tokens + [(len(run), len(run), False)]:
            gap = run[cur[1] : start] if cur else ""
            if is_name and cur and gap.strip(" 　") == "" and len(gap) <= 1:
                cur[1], cur[2] = end, cur[2] + 1
                continue
            if cur:
                s, e, n = cur
                after = text[off + e : off + e + 4].lstrip(" 　")
                before = text[max(0, off + s - 4) : off + s]
                if n >= 2 or after.startswith(_JP_HONORIFIC) or any(c in before for c in _JP_CUE):
                    out.append(self._hit(off + s, off + e, 0.8))
            cur = [start, end, 1] if is_name else None
        return out

    def _chinese(self, off: int, run: str) -> list[Finding]:
        out, pos = [], 0
        for w in self._zh.cut(run):
            start = run.find(w.word, pos)
            pos = start + len(w.word)
            name = w.word
            if w.flag == "nr" and 2 <= len(name) <= 4:
                if name[0] in _ZH_SURNAMES or name.startswith(_ZH_COMPOUND):
                    out.append(self._hit(off + start, off + pos, 0.75))
        return out

    def _korean(self, text: str) -> list[Finding]:
        return [
            self._hit(m.start("name"), m.end("name"), 0.75)
            for pattern in (_KO_NAME, _KO_CUE)
            for m in pattern.finditer(text)
            if m.group("name") not in _KO_NOT_NAMES and m.group("name")[:2] not in _KO_NOT_NAMES
        ]
