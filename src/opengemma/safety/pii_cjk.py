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
_JP_HONORIFIC = (
    "様", "さま", "さん", "氏", "君", "くん", "ちゃん", "先生", "殿", "です", "と申", "部長",
    "課長", "社長", "係長", "主任", "会長", "専務", "常務", "教授", "医師", "弁護士", "先輩",
    "店長",
)  # fmt: skip
# Characters and words only Japanese writes (a kanji-only Japanese text still has them).
_JP_MARKERS = ("様", "氏名", "担当", "〒", "丁目", "株式会社", "円", "電話", "住所")
_JP_CUE = ("氏名", "名前", "担当", "署名", "宛名", "差出人", "担当者", "患者", "申込者")
# The hundred or so most common Chinese surnames (single characters) and the compound ones.
_ZH_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏"
    "吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱"
    "严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁"
    "尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时"
    "穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾"
    "隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
    "陳黃張劉楊趙吳許韓馮鄧蕭葉蘇呂盧鍾譚陸賈韋鄒龍賀顧龔萬錢嚴覃鄭謝羅"
)
_ZH_COMPOUND = ("欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "令狐", "慕容", "尉迟", "长孙")
_KO_SURNAMES = (
    "김이박최정강조윤장임한오서신권황안송류전홍고문양손배백허유남심노하곽성차주우구민진나엄채원천방공"
    "현함변염여추도소석선설마길연위표명기반왕금옥육인맹제모탁국어은편용예경봉사부"
)
_KO_AFTER = (  # honorifics and titles written after a Korean name
    r"님|씨|고객님|선생님|교수님|귀하|드림|올림|께서|과장|대리|부장|사장|팀장|대표|교수|선생"
    r"|기자|변호사|원장|실장|차장|이사|회장|작가|감독|매니저|주임|의사|간호사|선수"
)
_KO_NAME = re.compile(
    rf"(?<![가-힣])(?P<name>[{_KO_SURNAMES}][가-힣]{{1,3}}?)(?=[ \t]?(?:{_KO_AFTER}))"
)
# "저는 김민준입니다": a full (three-syllable) name before a copula.
_KO_COPULA = re.compile(
    rf"(?<![가-힣])(?P<name>[{_KO_SURNAMES}][가-힣]{{2}})(?=[ \t]?(?:입니다|이에요|예요|이고))"
)
# "정민 오빠", "수빈 언니", "지훈 씨": a given name alone before a kinship or peer address.
_KO_GIVEN = re.compile(
    r"(?<![가-힣])(?P<name>[가-힣]{2})(?=[ \t]?(?:오빠|언니|누나|선배|후배|씨(?!앗|름)))"
)
_KO_CUE = re.compile(
    r"(?:이름|성명|성함|저는|제 이름은|담당자?|담당의|주치의|환자명?|고객명|수신인|수신자|받는 ?분"
    r"|받는 ?사람|보낸 ?사람|보호자명?|신청인|예금주|작성자|대표이사|대표자|대표|설계사|상담원"
    r"|상담사|매니저|원장|교수|기자|팀장|과장|부장)[ \t]*[:：]?[ \t]*"
    r"(?:(?:설계사|상담원|상담사|매니저|교수|의사|기자|변호사)[ \t]+)?"  # "담당 설계사 이서연"
    rf"(?P<name>[{_KO_SURNAMES}][가-힣]{{1,2}})"
    r"(?=[이가은는을를의고, \t\n(（]|$)"
)
# Organisation endings: "한빛보험", "국민은행" are companies, not people.
_KO_ORG_ENDINGS = (
    "보험", "은행", "카드", "증권", "전자", "그룹", "병원", "센터", "학교", "대학", "회사", "상사",
    "건설", "물산", "산업", "통신", "약국", "마트", "식품", "푸드",
)  # fmt: skip


# Words that start with a surname syllable and stand before honorifics: not names.
_KO_NOT_NAMES = frozenset(
    "고객 선생 교수 사장 부장 과장 대리 대표 이사 회장 여러분 우리 이분 저희 주인 손님 기사 부모 "
    "어머 아버 이모 고모 삼촌 사모 원장 실장 차장 팀장 소장 국장 의사 간호 학생 신부 수녀 목사 "
    "이웃 문의 안녕 감사 주문 고맙 부탁 설계사 상담원 담당자 예정 담당 매니저 기자 변호사 작가 "
    "우리 저기 여기 거기 친구 동생 엄마 아빠 남편 아내 회사 나도 너도 제가 내가 그냥 진짜".split()
)
# Chat lines "[14:02] 美咲:", "[22:10] 지훈:": with two or more such lines, a short CJK or
# Hangul speaker label is a person unless it names a role.
_CJK_SPEAKER = re.compile(
    r"(?m)^[ \t]*(?:\[[^\]\n]{3,25}\]|\d{1,2}:\d{2}(?::\d{2})?)[ \t]*"
    r"(?P<name>[\u4e00-\u9fff\u3040-\u30ff\uac00-\ud7a3]{1,4})[ \t]*[:：]"
)
_CJK_ROLES = frozenset(
    "客服 系统 管理员 助手 机器人 用户 客户 顾客 经理 老师 医生 护士 店员 司机 快递 "
    "상담원 시스템 관리자 고객 직원 기사 선생님 엄마 아빠 "
    "担当 システム 管理者 ボット お客様 店員 先生 母 父 社長 部長".split()
)
# Chinese: a field or role before a name, a title after it ("客户：林志豪", "张先生").
_ZH_SURNAME_CHARS = "".join(sorted(_ZH_SURNAMES))
_ZH_CUE = re.compile(
    r"(?:客户|顾客|購買方|购买方|收件人|收货人|联系人|聯絡人|紧急联系人|姓名|处理人员|處理人員|负责人"
    r"|負責人|申请人|经办人|业务员|发件人|寄件人|患者|员工|开户名|户名|持卡人|收款人|付款人|投保人"
    r"|被保险人|签名|客服|审核人|填表人|报告人|联系人姓名|主治医生|医生|老师|经理)"
    r"[ \t]*[:：]?[ \t]*"
    rf"(?P<name>[{_ZH_SURNAME_CHARS}][\u4e00-\u9fff]{{1,2}})(?![\u4e00-\u9fff])"
)
_ZH_TITLE = (
    "先生", "女士", "小姐", "老师", "經理", "经理", "医生", "醫生", "教授", "律师", "同学", "总监",
    "主任", "师傅", "阿姨", "总",
)  # fmt: skip
# Financial numerals (伍仟陆佰...), place endings and common words that a tagger reads as names.
_ZH_NOT_IN_NAME = frozenset("零壹贰叁肆伍陆柒捌玖拾佰仟萬亿元整")
_ZH_PLACE_END = tuple("区市省县镇村路街楼号州")
_ZH_NOT_NAMES = frozenset(
    "谢谢 华为 小米 联想 海尔 格力 腾讯 阿里 百度 京东 美团 淘宝 微信 支付宝 比亚迪 "
    "周末 周一 周二 周三 周四 周五 周六 周日 高兴 高级 黄金 金额 方便 明天 明白 文件 安全".split()
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
            return out + self._speakers(text)
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
        if not japanese:
            out += self._chinese_cues(text)
        return out + self._speakers(text)

    def _speakers(self, text: str) -> list[Finding]:
        """Speaker labels of a chat log written in CJK or Hangul (two lines or more)."""
        found = [m for m in _CJK_SPEAKER.finditer(text) if m.group("name") not in _CJK_ROLES]
        if len(_CJK_SPEAKER.findall(text)) < 2:
            return []
        return [self._hit(m.start("name"), m.end("name"), 0.7) for m in found]

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
                before = text[max(0, off + s - 5) : off + s]
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
            if w.flag == "nr" and 2 <= len(name) <= 4 and _zh_plausible(name):
                if name[0] in _ZH_SURNAMES or name.startswith(_ZH_COMPOUND):
                    out.append(self._hit(off + start, off + pos, 0.75))
        return out

    def _chinese_cues(self, text: str) -> list[Finding]:
        """Chinese names after a field or role label, or before a title (张先生)."""
        out = [
            self._hit(m.start("name"), m.end("name"), 0.75)
            for m in _ZH_CUE.finditer(text)
            if _zh_plausible(m.group("name"))
        ]
        for title in _ZH_TITLE:
            before = rf"(?<![\u4e00-\u9fff])([{_ZH_SURNAME_CHARS}][\u4e00-\u9fff]{{0,2}}?)[ 　]?"
            for m in re.finditer(before + title, text):
                if _zh_plausible(m.group(1)):
                    out.append(self._hit(m.start(1), m.end(1), 0.7))
        return out

    def _korean(self, text: str) -> list[Finding]:
        out = []
        for pattern in (_KO_NAME, _KO_CUE, _KO_COPULA, _KO_GIVEN):
            for m in pattern.finditer(text):
                name = m.group("name")
                if name in _KO_NOT_NAMES or name[:2] in _KO_NOT_NAMES or name[:3] in _KO_NOT_NAMES:
                    continue
                if len(name) >= 3 and name.endswith(_KO_ORG_ENDINGS):
                    continue
                out.append(self._hit(m.start("name"), m.end("name"), 0.75))
        return out


def _zh_plausible(name: str) -> bool:
    """Not a financial numeral, a place (…区, …路) or a common word the tagger calls a name."""
    return (
        not any(c in _ZH_NOT_IN_NAME for c in name)
        and not name.endswith(_ZH_PLACE_END)
        and name not in _ZH_NOT_NAMES
        and name[:2] not in _ZH_NOT_NAMES
    )
